//! Dependencies: installed once per (requirements, runtime, architecture) into a
//! cache, checked, and compressed once into a sorted `deps.zip` whose entries
//! are copied raw into every function's zip.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::Error;
use crate::archive;
use crate::config::{Architecture, DepsSource, python_version};
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
        hasher.update(b"lambda-deps-v1\0");
        hasher.update(requirements);
        for part in [runtime, architecture.as_str()].into_iter().chain(leave_out.iter().map(String::as_str)) {
            hasher.update(b"\0");
            hasher.update(part.as_bytes());
        }
        for arg in &pip.extra_args {
            hasher.update(b"\0pip:");
            hasher.update(arg.as_bytes());
        }
        DepsKey { hash: hex(&hasher.finalize()) }
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

/// Installs (or finds in `cache_dir`) a function's dependencies and compresses them once.
/// `on_install` is called before pip runs (a cache miss). `function` (the first that needs them)
/// names the configuration in errors.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    function: &str,
    repo: &Path,
    source: &DepsSource,
    runtime: &str,
    architecture: Architecture,
    leave_out: &[String],
    pip: &Pip,
    cache_dir: &Path,
    on_install: &dyn Fn(),
) -> Result<Deps, Error> {
    let root = cache_dir.join("lambda-deps");
    std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let (key, site, staging) = match source {
        DepsSource::Requirements(requirements) => {
            let path = repo.join(requirements);
            let content = run_state::fs::read_regular(&path, MAX_REQUIREMENTS_BYTES).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::MissingRequirements { path: path.clone() },
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
            (key, site, staging)
        }
        DepsSource::Installed(dir) => {
            let site = repo.join(dir);
            if !site.is_dir() {
                return Err(Error::MissingRequirements { path: site });
            }
            // Like a source: a link out of the monorepo is refused, not packaged.
            let repo_root = repo.canonicalize().map_err(|e| Error::io(repo, e))?;
            let target = site.canonicalize().map_err(|e| Error::io(&site, e))?;
            if !target.starts_with(&repo_root) {
                return Err(Error::DependenciesOutside { function: function.to_string(), path: dir.clone(), target });
            }
            (DepsKey { hash: String::new() }, site, staging(&root)?)
        }
    };
    let entries = installed_entries(function, &site, leave_out)?;
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
    archive::write_entries(&staging.path().join("deps.zip"), &entries)?;
    let unzipped_size = entries.iter().map(|e| e.size).sum();
    let summary = serde_json::to_vec(&(unzipped_size, entries.len())).expect("a pair serialises");
    std::fs::write(staging.path().join("deps.json"), summary).map_err(|e| Error::io(staging.path(), e))?;
    // The compressed archive is all later runs need.
    let _ = std::fs::remove_dir_all(staging.path().join("site"));
    let staging = staging.keep();
    let dir = root.join(&key.hash);
    if let Err(e) = std::fs::rename(&staging, &dir) {
        let _ = std::fs::remove_dir_all(&staging);
        // Another process finished the same key first: use theirs.
        if !dir.join("deps.zip").is_file() {
            return Err(Error::io(&dir, e));
        }
    }
    Ok(Deps { archive: dir.join("deps.zip"), key, unzipped_size, files: entries.len(), installed_now: true })
}

fn staging(root: &Path) -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new().prefix(".staging-").tempdir_in(root).map_err(|e| Error::io(root, e))
}

fn cached(root: &Path, key: &DepsKey) -> Option<Deps> {
    let dir = root.join(&key.hash);
    let summary = std::fs::read(dir.join("deps.json")).ok()?;
    let (unzipped_size, files) = serde_json::from_slice::<(u64, usize)>(&summary).ok()?;
    let archive = dir.join("deps.zip");
    archive.is_file().then(|| Deps { key: key.clone(), archive, unzipped_size, files, installed_now: false })
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
        .map_err(|e| Error::PipNotRunnable { python: pip.python.clone(), message: e.to_string() })?;
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
    let mut entries = Vec::new();
    for item in walkdir::WalkDir::new(site).sort_by_file_name() {
        let item = item.map_err(|e| Error::Walk { path: site.to_path_buf(), message: e.to_string() })?;
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
        entries.push(crate::entries::entry(function, relative, item.path())?);
    }
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

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::is_left_out;

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
