//! Dependencies: installed once per (requirements, runtime, architecture) into a
//! cache, checked, and compressed once into a sorted `deps.zip` whose entries
//! are copied raw into every function's zip.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::Error;
use crate::archive;
use crate::config::{Architecture, DepsSource, FunctionSpec, python_version};
use crate::entries::Entry;

/// Files pip writes that differ from install to install, or that Lambda never reads.
const VOLATILE_METADATA: &[&str] = &["RECORD", "INSTALLER", "REQUESTED", "direct_url.json"];

/// What identifies an installed dependency set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepsKey {
    /// Hex SHA-256 of everything that shapes the install.
    pub hash: String,
}

/// How pip is run.
#[derive(Debug, Clone)]
pub struct Pip {
    /// The Python whose pip installs (it need not match the runtime: pip installs for a platform).
    pub python: PathBuf,
    /// Extra `pip install` arguments (`--index-url`, `--find-links`, `--no-index` …).
    pub extra_args: Vec<String>,
}

impl DepsKey {
    /// The key of a requirements file's content for a runtime, architecture and leave-out list.
    pub fn new(
        requirements: &[u8],
        runtime: &str,
        architecture: Architecture,
        leave_out: &[String],
        pip: &Pip,
    ) -> DepsKey {
        let mut hasher = Sha256::new();
        // Bump when the layout of the cache or of deps.zip changes.
        // v2: dependencies are checked for the runtime's Python and platform when cached.
        // v3: already-compressed and incompressible files are stored, not deflated.
        hasher.update(b"lambda-deps-v3\0");
        hasher.update(requirements);
        for part in [runtime, architecture.as_str()].into_iter().chain(leave_out.iter().map(String::as_str)) {
            hasher.update(b"\0");
            hasher.update(part.as_bytes());
        }
        for arg in &pip.extra_args {
            hasher.update(b"\0pip:");
            hasher.update(arg.as_bytes());
        }
        DepsKey { hash: hex::encode(hasher.finalize()) }
    }
}

/// A ready dependency set: its installed folder and its compressed archive.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The key.
    pub key: DepsKey,
    /// `deps.zip`: every kept file, compressed, sorted.
    pub archive: PathBuf,
    /// Total uncompressed size.
    pub unzipped_size: u64,
    /// Number of files.
    pub files: usize,
    /// Whether this call installed it (false: it came from the cache).
    pub installed_now: bool,
}

/// The most a requirements file may hold.
const MAX_REQUIREMENTS_BYTES: u64 = 16 * 1024 * 1024;

/// Installs (or finds in `cache_dir`) a function's dependencies, checks them (the architecture of
/// every `.so`, the Python version and platform of every `.so` name and wheel tag) and compresses
/// them once. `on_install` is called before pip runs (a cache miss). `function` (the first that
/// needs them) names the configuration in errors.
pub fn prepare(
    function: &FunctionSpec,
    source: &DepsSource,
    repo: &Path,
    pip: &Pip,
    cache_dir: &Path,
    on_install: &dyn Fn(),
) -> Result<Deps, Error> {
    let (runtime, architecture, leave_out) =
        (function.runtime.as_str(), function.architecture, function.leave_out_packages.as_slice());
    let root = cache_dir.join("lambda-deps");
    std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let (key, site, staging, origin) = match source {
        DepsSource::Requirements(requirements) => {
            let path = repo.join(requirements);
            let content = run_state::fs::read_regular(&path, MAX_REQUIREMENTS_BYTES).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::MissingRequirements {
                    function: function.name.clone(),
                    key: function.dependencies_key.clone(),
                    path: path.clone(),
                },
                _ => Error::io(&path, e),
            })?;
            let key = DepsKey::new(&content, runtime, architecture, leave_out, pip);
            if let Some(deps) = cached(&root, &key) {
                return Ok(deps);
            }
            on_install();
            // Installed in a temporary folder and renamed into place: a crash leaves no half cache.
            let staging = staging(&root)?;
            let site = staging.path().join("site");
            install(&path, runtime, architecture, pip, &site)?;
            (key, site, staging, Origin::Requirements(requirements.clone()))
        }
        DepsSource::Installed(dir) => {
            let site = installed_folder(function, dir, repo)?;
            (DepsKey { hash: String::new() }, site, staging(&root)?, Origin::Folder(dir.clone()))
        }
    };
    let entries = installed_entries(&function.name, &site, leave_out)?;
    let key = if key.hash.is_empty() {
        // A ready folder is keyed by its content.
        let mut listing = Vec::new();
        for entry in &entries {
            listing.extend_from_slice(entry.zip_path.as_bytes());
            listing.extend_from_slice(&entry.sha256);
        }
        let key = DepsKey::new(&listing, runtime, architecture, leave_out, pip);
        if let Some(deps) = cached(&root, &key) {
            return Ok(deps);
        }
        key
    } else {
        key
    };
    check_native_code(&entries, architecture)?;
    check_python(function, &entries, &origin)?;
    cache(&root, key, staging, &entries)
}

/// A ready dependencies folder, checked: it exists, and a relative one stays in the monorepo
/// (an absolute folder, a CodeBuild cache, is the user's).
fn installed_folder(function: &FunctionSpec, dir: &str, repo: &Path) -> Result<PathBuf, Error> {
    let absolute = Path::new(dir).is_absolute();
    let site = if absolute { PathBuf::from(dir) } else { repo.join(dir) };
    if !site.is_dir() {
        return Err(Error::MissingDependencies {
            function: function.name.clone(),
            key: function.dependencies_key.clone(),
            path: dir.to_string(),
        });
    }
    if !absolute {
        // Like a source: a link out of the monorepo is refused, not packaged.
        let repo_root = repo.canonicalize().map_err(|e| Error::io(repo, e))?;
        let target = site.canonicalize().map_err(|e| Error::io(&site, e))?;
        if !target.starts_with(&repo_root) {
            return Err(Error::DependenciesOutside {
                function: function.name.clone(),
                key: function.dependencies_key.clone(),
                path: dir.to_string(),
                target,
            });
        }
    }
    Ok(site)
}

/// Archives checked entries in the staging folder and moves it into the cache under `key`.
fn cache(root: &Path, key: DepsKey, staging: tempfile::TempDir, entries: &[Entry]) -> Result<Deps, Error> {
    // The cache is not made durable here: a zip is synced when it leaves the cache (`publish`).
    archive::write_entries(&staging.path().join("deps.zip"), entries)?;
    let unzipped_size = entries.iter().map(|e| e.size).sum();
    let summary = serde_json::to_vec(&(unzipped_size, entries.len())).expect("a pair serialises");
    std::fs::write(staging.path().join("deps.json"), summary).map_err(|e| Error::io(staging.path(), e))?;
    // The compressed archive is all later runs need.
    let _ = std::fs::remove_dir_all(staging.path().join("site"));
    let staging = staging.keep();
    let dir = root.join(&key.hash);
    if dir.exists() && cached(root, &key).is_none() {
        // Left cut short by a crash (the cache is not synced).
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Err(e) = std::fs::rename(&staging, &dir) {
        let _ = std::fs::remove_dir_all(&staging);
        // Another process finished the same key first: use theirs.
        if !dir.join("deps.zip").is_file() {
            return Err(Error::io(&dir, e));
        }
    }
    Ok(Deps { archive: dir.join("deps.zip"), key, unzipped_size, files: entries.len(), installed_now: true })
}

/// Where checked dependencies came from, for the fix an error names.
enum Origin {
    /// Installed by pip from this requirements file.
    Requirements(String),
    /// A folder installed by other means.
    Folder(String),
}

/// Every compiled module and every wheel must be for the function's Python and platform: a
/// `cpython-311` module in a python3.12 function is not loaded (its package fails at import, or
/// falls back to pure Python without a word), so it is an error naming the package and the fix.
fn check_python(function: &FunctionSpec, entries: &[Entry], origin: &Origin) -> Result<(), Error> {
    let Some(version) = python_version(&function.runtime).and_then(parse_version) else { return Ok(()) };
    let architecture = function.architecture;
    for entry in entries {
        let (top, rest) = entry.zip_path.split_once('/').unwrap_or(("", &entry.zip_path));
        let name = entry.zip_path.rsplit('/').next().unwrap_or("");
        let (package, what) = if name.ends_with(".so") {
            let Some(problem) = so_problem(name, version, architecture) else { continue };
            let package = if top.is_empty() { name.split('.').next().unwrap_or(name) } else { top };
            (package.to_string(), format!("is built for {problem}"))
        } else if top.ends_with(".dist-info") && rest == "WHEEL" {
            let text =
                run_state::fs::read_regular(&entry.source, 64 * 1024).map_err(|e| Error::io(&entry.source, e))?;
            let text = String::from_utf8_lossy(&text);
            let tags: Vec<&str> =
                text.lines().filter_map(|l| l.strip_prefix("Tag:")).map(str::trim).filter(|t| !t.is_empty()).collect();
            let problems: Vec<String> = tags.iter().filter_map(|t| tag_problem(t, version, architecture)).collect();
            if tags.is_empty() || problems.len() < tags.len() {
                continue;
            }
            let package = top.split('-').next().unwrap_or(top).to_string();
            (package.clone(), format!("says `{package}` is for {} (Tag {})", problems[0], tags.join(", ")))
        } else {
            continue;
        };
        let runtime = &function.runtime;
        let arch = architecture.as_str();
        let section = format!("[lambda.functions.{}]", function.name);
        let (file, fix) = match origin {
            Origin::Folder(dir) => (
                format!("{dir}/{}", entry.zip_path),
                format!(
                    "reinstall {dir} for {runtime} on {arch} (pip install --target {dir} --python-version {}.{} --platform {} --implementation cp --only-binary=:all: …), or fix `runtime`/`architecture` in {section}",
                    version.0,
                    version.1,
                    architecture.platform_tag()
                ),
            ),
            Origin::Requirements(requirements) => (
                format!("{} (installed from {requirements})", entry.zip_path),
                format!(
                    "pin a release of `{package}` with a wheel for {runtime} on {arch} in {requirements}, or fix `runtime`/`architecture` in {section}"
                ),
            ),
        };
        return Err(Error::WrongPython {
            function: function.name.clone(),
            file,
            what: what.into(),
            target: format!("{runtime} on {arch}"),
            fix: fix.into(),
        });
    }
    Ok(())
}

/// `(3, 12)` from `3.12`.
fn parse_version(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// `(3, 11)` from `311` (a CPython tag's digits).
fn tag_version(digits: &str) -> Option<(u32, u32)> {
    let digits = digits.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let (major, minor) = digits.split_at_checked(1)?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn architecture_of(platform: &str) -> Option<&'static str> {
    if platform.contains("x86_64") {
        Some("x86_64")
    } else if platform.contains("aarch64") || platform.contains("arm64") {
        Some("arm64")
    } else {
        None
    }
}

/// What is wrong with a compiled module's name (`m.cpython-311-x86_64-linux-gnu.so`) for the
/// runtime, if anything. `abi3` and untagged names (`m.so`, `libx.so`) are fine here (the ELF
/// check still applies).
fn so_problem(name: &str, version: (u32, u32), architecture: Architecture) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() < 3 {
        return None;
    }
    let tag = parts[parts.len() - 2];
    if tag == "abi3" {
        return None;
    }
    if let Some(rest) = tag.strip_prefix("cpython-") {
        let (digits, platform) = rest.split_once('-').unwrap_or((rest, ""));
        let built = tag_version(digits)?;
        if built != version {
            return Some(format!("CPython {}.{}", built.0, built.1));
        }
        if platform.contains("darwin") {
            return Some("macOS".into());
        }
        if platform.contains("musl") {
            return Some("musl Linux (Lambda's Linux is glibc)".into());
        }
        return match architecture_of(platform) {
            Some(found) if found != architecture.as_str() => Some(format!("Linux on {found}")),
            _ => None,
        };
    }
    if tag.starts_with("pypy") {
        return Some("PyPy".into());
    }
    None
}

/// What is wrong with one wheel tag (`cp311-cp311-manylinux_2_17_x86_64`, possibly compressed:
/// `py2.py3-none-any`) for the runtime, if anything: `None` when one of its expansions fits.
fn tag_problem(tag: &str, version: (u32, u32), architecture: Architecture) -> Option<String> {
    let parts: Vec<&str> = tag.split('-').collect();
    let [pythons, abis, platforms] = parts.as_slice() else { return Some(format!("an unreadable tag `{tag}`")) };
    let mut first = None;
    for python in pythons.split('.') {
        for abi in abis.split('.') {
            for platform in platforms.split('.') {
                match one_tag_problem(python, abi, platform, version, architecture) {
                    None => return None,
                    Some(problem) => {
                        first.get_or_insert(problem);
                    }
                }
            }
        }
    }
    first
}

fn one_tag_problem(
    python: &str,
    abi: &str,
    platform: &str,
    version: (u32, u32),
    architecture: Architecture,
) -> Option<String> {
    if let Some(digits) = python.strip_prefix("cp") {
        let built = tag_version(digits)?;
        let fits = if abi == "abi3" { built.0 == version.0 && built.1 <= version.1 } else { built == version };
        if !fits {
            let plus = if abi == "abi3" { "+" } else { "" };
            return Some(format!("CPython {}.{}{plus}", built.0, built.1));
        }
    } else if let Some(digits) = python.strip_prefix("py") {
        if !digits.starts_with('3') {
            return Some(format!("Python {digits}"));
        }
    } else {
        return Some(format!("the `{python}` interpreter"));
    }
    if !(abi == "none" || abi == "abi3" || abi.starts_with("cp")) {
        return Some(format!("the `{abi}` ABI"));
    }
    if platform == "any" {
        return None;
    }
    if platform.starts_with("musllinux") {
        return Some("musl Linux (Lambda's Linux is glibc)".into());
    }
    if !(platform.starts_with("manylinux") || platform.starts_with("linux_")) {
        return Some(format!("the platform `{platform}`"));
    }
    match architecture_of(platform) {
        Some(found) if found == architecture.as_str() => None,
        Some(found) => Some(format!("Linux on {found}")),
        None => Some(format!("the platform `{platform}`")),
    }
}

fn staging(root: &Path) -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new().prefix(".staging-").tempdir_in(root).map_err(|e| Error::io(root, e))
}

fn cached(root: &Path, key: &DepsKey) -> Option<Deps> {
    let dir = root.join(&key.hash);
    let summary = std::fs::read(dir.join("deps.json")).ok()?;
    let (unzipped_size, files) = serde_json::from_slice::<(u64, usize)>(&summary).ok()?;
    let archive = dir.join("deps.zip");
    // The cache is not synced to disk: an archive cut short by a crash reads as missing.
    let whole = archive::list(&archive).is_ok_and(|names| names.len() == files);
    whole.then(|| Deps { key: key.clone(), archive, unzipped_size, files, installed_now: false })
}

fn install(
    requirements: &Path,
    runtime: &str,
    architecture: Architecture,
    pip: &Pip,
    target: &Path,
) -> Result<(), Error> {
    let version = python_version(runtime).unwrap_or("3.12");
    let output = Command::new(&pip.python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile", "--no-input"])
        .args(["--target"])
        .arg(target)
        .args(["--platform", architecture.platform_tag(), "--implementation", "cp", "--python-version", version])
        .args(["--only-binary=:all:", "--requirement"])
        .arg(requirements)
        .args(&pip.extra_args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::PipNotRunnable { python: pip.python.clone(), source })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    // pip's own words, not a summary of them: the last ERROR lines say what could not be resolved.
    let mut message: Vec<&str> = stderr.lines().filter(|l| l.starts_with("ERROR")).collect();
    if message.is_empty() {
        message = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    }
    let message = message.iter().rev().take(3).rev().copied().collect::<Vec<_>>().join(" ");
    Err(Error::Pip { requirements: requirements.to_path_buf(), message })
}

/// The installed files, minus bytecode, volatile metadata and left-out packages, sorted.
fn installed_entries(function: &str, site: &Path, leave_out: &[String]) -> Result<Vec<Entry>, Error> {
    let mut files = Vec::new();
    for item in walkdir::WalkDir::new(site).sort_by_file_name() {
        let item = item.map_err(|source| Error::Walk { path: site.to_path_buf(), source })?;
        if !item.file_type().is_file() {
            continue;
        }
        let relative = item.path().strip_prefix(site).expect("under site");
        let Some(relative) = relative.to_str() else {
            return Err(crate::entries::non_utf8(site, item.path(), function));
        };
        let relative = relative.replace('\\', "/");
        let top = relative.split('/').next().unwrap_or("");
        let name = item.file_name().to_string_lossy();
        let in_cache = relative.split('/').any(|part| part == "__pycache__");
        let volatile = top.ends_with(".dist-info") && VOLATILE_METADATA.contains(&name.as_ref());
        if in_cache || name.ends_with(".pyc") || volatile || is_left_out(top, leave_out) {
            continue;
        }
        files.push((relative, item.into_path()));
    }
    // Hashed on all cores; the first failing file in name order is the error.
    let hashed: Vec<Result<Entry, Error>> =
        files.into_par_iter().map(|(relative, path)| crate::entries::entry(function, relative, &path)).collect();
    let mut entries = hashed.into_iter().collect::<Result<Vec<Entry>, Error>>()?;
    entries.sort_by(|a, b| a.zip_path.cmp(&b.zip_path));
    Ok(entries)
}

/// `boto3`, `boto3-1.35.0.dist-info`, `boto3.py` all belong to package `boto3`.
fn is_left_out(top: &str, leave_out: &[String]) -> bool {
    let stem = top.strip_suffix(".py").unwrap_or(top);
    let project = stem.split_once('-').map_or(stem, |(name, _)| name);
    let normalise = |s: &str| s.to_ascii_lowercase().replace(['-', '.'], "_");
    leave_out.iter().any(|p| normalise(p) == normalise(project))
}

/// Every shared library must be built for the function's architecture.
fn check_native_code(entries: &[Entry], architecture: Architecture) -> Result<(), Error> {
    for entry in entries {
        let name = entry.zip_path.rsplit('/').next().unwrap_or("");
        if !(name.ends_with(".so") || name.contains(".so.")) {
            continue;
        }
        let mut header = [0u8; 20];
        let mut file = std::fs::File::open(&entry.source).map_err(|e| Error::io(&entry.source, e))?;
        if file.read_exact(&mut header).is_err() || &header[..4] != b"\x7fELF" {
            continue;
        }
        // e_machine sits at offset 18, in the file's byte order (EI_DATA: 1 little, 2 big endian).
        let machine = if header[5] == 2 {
            u16::from_be_bytes([header[18], header[19]])
        } else {
            u16::from_le_bytes([header[18], header[19]])
        };
        if machine != architecture.elf_machine() {
            return Err(Error::WrongArchitecture {
                file: entry.zip_path.clone(),
                found: elf_machine_name(machine),
                expected: architecture.as_str(),
            });
        }
    }
    Ok(())
}

fn elf_machine_name(machine: u16) -> String {
    match machine {
        3 => "x86 (32-bit)".into(),
        40 => "arm (32-bit)".into(),
        62 => "x86_64".into(),
        183 => "arm64".into(),
        other => format!("ELF machine {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_module_names_say_their_python_and_platform() {
        let x86 = Architecture::X86_64;
        assert_eq!(so_problem("m.cpython-312-x86_64-linux-gnu.so", (3, 12), x86), None);
        assert_eq!(so_problem("m.abi3.so", (3, 12), x86), None);
        assert_eq!(so_problem("libfoo.so", (3, 12), x86), None);
        assert_eq!(so_problem("m.cpython-311-x86_64-linux-gnu.so", (3, 12), x86).as_deref(), Some("CPython 3.11"));
        assert_eq!(so_problem("m.cpython-312-aarch64-linux-gnu.so", (3, 12), x86).as_deref(), Some("Linux on arm64"));
        assert_eq!(so_problem("m.cpython-312-darwin.so", (3, 12), x86).as_deref(), Some("macOS"));
    }

    #[test]
    fn wheel_tags_fit_the_runtime_or_say_why_not() {
        let x86 = Architecture::X86_64;
        let arm = Architecture::Arm64;
        for fits in [
            "py3-none-any",
            "py2.py3-none-any",
            "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64",
            "cp38-abi3-manylinux2014_x86_64",
            "cp312-none-any",
        ] {
            assert_eq!(tag_problem(fits, (3, 12), x86), None, "{fits}");
        }
        assert_eq!(tag_problem("cp311-cp311-manylinux2014_x86_64", (3, 12), x86).as_deref(), Some("CPython 3.11"));
        assert_eq!(tag_problem("cp313-abi3-manylinux2014_x86_64", (3, 12), x86).as_deref(), Some("CPython 3.13+"));
        assert_eq!(tag_problem("cp312-cp312-manylinux2014_x86_64", (3, 12), arm).as_deref(), Some("Linux on x86_64"));
        assert_eq!(
            tag_problem("cp312-cp312-musllinux_1_1_x86_64", (3, 12), x86).as_deref(),
            Some("musl Linux (Lambda's Linux is glibc)")
        );
        assert_eq!(
            tag_problem("cp312-cp312-macosx_11_0_arm64", (3, 12), arm).as_deref(),
            Some("the platform `macosx_11_0_arm64`")
        );
        assert_eq!(tag_problem("py2-none-any", (3, 12), x86).as_deref(), Some("Python 2"));
    }

    #[test]
    fn left_out_packages_match_their_folders_and_metadata() {
        let leave = vec!["boto3".to_string(), "botocore".to_string()];
        assert!(is_left_out("boto3", &leave));
        assert!(is_left_out("boto3-1.35.0.dist-info", &leave));
        assert!(is_left_out("botocore", &leave));
        assert!(!is_left_out("boto3_helpers", &leave));
        assert!(!is_left_out("requests", &leave));
    }
}
