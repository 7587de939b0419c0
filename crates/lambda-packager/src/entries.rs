//! Collecting a function's own files: what goes in, under which name, with which mode.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::Error;
use crate::config::FunctionSpec;

/// One file bound for a zip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its path in the zip (`/` separated, relative, no `..`).
    pub zip_path: String,
    /// Where its bytes are read from.
    pub source: PathBuf,
    /// 0o755 for executables, 0o644 otherwise.
    pub mode: u32,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its content.
    pub sha256: [u8; 32],
}

/// The function's own files (not its dependencies), sorted by zip path.
///
/// Only regular files go in: a named pipe, a socket or a device among the sources (and not
/// excluded) is an error naming it, as is a link that leaves the source tree or the monorepo,
/// and a file name that is not UTF-8 (a zip entry's name is UTF-8; made valid, two names could
/// become one).
pub fn collect(repo: &Path, function: &FunctionSpec) -> Result<Vec<Entry>, Error> {
    let repo = repo.canonicalize().map_err(|e| Error::io(repo, e))?;
    let mut entries = Vec::new();
    for mapping in &function.sources {
        let from = repo.join(&mapping.from);
        let meta = std::fs::symlink_metadata(&from)
            .map_err(|_| Error::MissingSource { function: function.name.clone(), path: mapping.from.clone() })?;
        let root = from.canonicalize().map_err(|e| Error::io(&from, e))?;
        if !root.starts_with(&repo) {
            return Err(Error::SymlinkOutside { path: from.clone(), target: root });
        }
        if meta.is_dir() || root.is_dir() {
            let prefix = mapping.to.as_deref().unwrap_or("");
            collect_dir(&repo, &root, prefix, function, &mut entries)?;
        } else {
            let name = match mapping.to.as_deref() {
                None => file_name(&repo, &from, function)?,
                Some(to) if to.is_empty() || to.ends_with('/') => {
                    format!("{to}{}", file_name(&repo, &from, function)?)
                }
                Some(to) => to.to_string(),
            };
            entries.push(entry(&function.name, name, &root)?);
        }
    }
    entries.sort_by(|a, b| a.zip_path.cmp(&b.zip_path));
    if let Some(pair) = entries.windows(2).find(|w| w[0].zip_path == w[1].zip_path) {
        return Err(Error::Collision {
            function: function.name.clone(),
            zip_path: pair[0].zip_path.clone(),
            first: pair[0].source.clone(),
            second: pair[1].source.clone(),
        });
    }
    Ok(entries)
}

fn collect_dir(
    repo: &Path,
    root: &Path,
    prefix: &str,
    function: &FunctionSpec,
    entries: &mut Vec<Entry>,
) -> Result<(), Error> {
    // Links are followed only inside the source folder; walkdir reports loops.
    for item in walkdir::WalkDir::new(root).follow_links(true).sort_by_file_name() {
        let item = item.map_err(|source| Error::Walk { path: root.to_path_buf(), source })?;
        if item.path_is_symlink() {
            let target = item.path().canonicalize().map_err(|e| Error::io(item.path(), e))?;
            if !target.starts_with(root) {
                return Err(Error::SymlinkOutside { path: item.path().to_path_buf(), target });
            }
        }
        if item.file_type().is_dir() {
            continue;
        }
        let relative = item.path().strip_prefix(root).expect("walkdir stays under its root");
        let Some(relative) = relative.to_str() else {
            return Err(non_utf8(repo, item.path(), &function.name));
        };
        let relative = relative.replace('\\', "/");
        if function.exclude.is_match(&relative) || function.always_excluded.is_match(&relative) {
            continue;
        }
        let zip_path = if prefix.is_empty() { relative } else { format!("{prefix}/{relative}") };
        // A named pipe, a socket or a device is refused by `entry`, which names it.
        entries.push(entry(&function.name, zip_path, item.path())?);
    }
    Ok(())
}

/// A file's name, which must be UTF-8.
fn file_name(repo: &Path, path: &Path, function: &FunctionSpec) -> Result<String, Error> {
    let name = path.file_name().unwrap_or_default();
    name.to_str().map(str::to_string).ok_or_else(|| non_utf8(repo, path, &function.name))
}

/// The error for a file name that is not UTF-8, its bytes shown escaped (relative to the monorepo).
pub(crate) fn non_utf8(repo: &Path, path: &Path, function: &str) -> Error {
    let shown = path.strip_prefix(repo).unwrap_or(path);
    Error::NonUtf8Name { function: function.to_string(), path: shown.as_os_str().as_bytes().escape_ascii().to_string() }
}

/// Reads a file's size, mode and hash: a regular file only (after links), read at most up to
/// Lambda's unzipped limit (a bigger one keeps its size, for the budget error, unhashed).
pub fn entry(function: &str, zip_path: String, source: &Path) -> Result<Entry, Error> {
    let file = run_state::fs::open_regular(source).map_err(|e| {
        // What it is, from its own file type (the opening refused it for that).
        match std::fs::metadata(source) {
            Ok(meta) if e.kind() == std::io::ErrorKind::InvalidInput && !meta.is_file() => Error::NotRegularFile {
                function: function.to_string(),
                path: source.to_path_buf(),
                what: pipeline_config::fs::kind_name(meta.file_type()),
            },
            _ => Error::io(source, e),
        }
    })?;
    let meta = file.metadata().map_err(|e| Error::io(source, e))?;
    let executable = meta.permissions().mode() & 0o111 != 0;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut reader = file.take(crate::MAX_UNZIPPED_BYTES + 1);
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = reader.read(&mut buffer).map_err(|e| Error::io(source, e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    if size > crate::MAX_UNZIPPED_BYTES {
        // Over the budget on its own: the build fails with the size; the rest is not read.
        size = size.max(meta.len());
    }
    Ok(Entry {
        zip_path,
        source: source.to_path_buf(),
        mode: if executable { 0o755 } else { 0o644 },
        size,
        sha256: hasher.finalize().into(),
    })
}
