//! Collecting a function's own files: what goes in, under which name, with which mode.

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
            collect_dir(&root, prefix, function, &mut entries)?;
        } else {
            let name = match mapping.to.as_deref() {
                None => file_name(&from),
                Some(to) if to.is_empty() || to.ends_with('/') => format!("{to}{}", file_name(&from)),
                Some(to) => to.to_string(),
            };
            entries.push(entry(name, &root)?);
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

fn collect_dir(root: &Path, prefix: &str, function: &FunctionSpec, entries: &mut Vec<Entry>) -> Result<(), Error> {
    // Links are followed only inside the source folder; walkdir reports loops.
    for item in walkdir::WalkDir::new(root).follow_links(true).sort_by_file_name() {
        let item = item.map_err(|e| Error::Walk { path: root.to_path_buf(), message: e.to_string() })?;
        if item.path_is_symlink() {
            let target = item.path().canonicalize().map_err(|e| Error::io(item.path(), e))?;
            if !target.starts_with(root) {
                return Err(Error::SymlinkOutside { path: item.path().to_path_buf(), target });
            }
        }
        if !item.file_type().is_file() {
            continue;
        }
        let relative = item.path().strip_prefix(root).expect("walkdir stays under its root");
        let relative = relative.to_string_lossy().replace('\\', "/");
        if function.exclude.is_match(&relative) || function.always_excluded.is_match(&relative) {
            continue;
        }
        let zip_path = if prefix.is_empty() { relative } else { format!("{prefix}/{relative}") };
        entries.push(entry(zip_path, item.path())?);
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Reads a file's size, mode and hash.
pub fn entry(zip_path: String, source: &Path) -> Result<Entry, Error> {
    let bytes = std::fs::read(source).map_err(|e| Error::io(source, e))?;
    let executable = std::fs::metadata(source).map_err(|e| Error::io(source, e))?.permissions().mode() & 0o111 != 0;
    Ok(Entry {
        zip_path,
        source: source.to_path_buf(),
        mode: if executable { 0o755 } else { 0o644 },
        size: bytes.len() as u64,
        sha256: Sha256::digest(&bytes).into(),
    })
}
