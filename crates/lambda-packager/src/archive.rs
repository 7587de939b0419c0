//! Deterministic zips: sorted entries, fixed timestamps, normalised modes, one
//! compression level; files compressed in parallel; dependency entries copied
//! raw from `deps.zip`, never compressed twice.
//!
//! A zip is assembled in memory (Lambda's limit keeps it under 50 MB; a bigger one is refused
//! anyway), hashed there and written with one call: the zip writer's seeks and small writes
//! cost no system calls, and the file is never read back to be hashed.

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use sha2::{Digest, Sha256};
use zip::write::{PreparedZipFile, SimpleFileOptions, ZipFileBuilder};
use zip::{CompressionMethod, DateTime, System, ZipArchive, ZipWriter};

use crate::Error;
use crate::entries::Entry;

/// The one compression level, so the same bytes compress the same way everywhere. 2 (zlib's
/// fast matcher) rather than `zip`'s 6: on a Lambda's dependencies (botocore, requests, PyYAML)
/// its zips are 1% bigger than `zip -r`'s and deflating takes a third less time.
const LEVEL: i64 = 2;

/// Names whose content is compressed already (botocore ships its API models as `.json.gz`):
/// stored as they are, as deflating them again costs time and saves nothing.
const COMPRESSED_ALREADY: &[&str] = &[
    ".gz", ".tgz", ".bz2", ".xz", ".zst", ".lz4", ".br", ".zip", ".whl", ".jar", ".7z", ".png", ".jpg", ".jpeg",
    ".gif", ".webp", ".woff", ".woff2",
];

fn options(mode: u32, method: CompressionMethod) -> SimpleFileOptions {
    let options = SimpleFileOptions::default().compression_method(method);
    let options = if method == CompressionMethod::Deflated { options.compression_level(Some(LEVEL)) } else { options };
    options
        // 1980-01-01 00:00, the zip epoch: no build time leaks into the bytes.
        .last_modified_time(DateTime::default())
        .unix_permissions(mode)
        .system(System::Unix)
        .large_file(false)
}

/// One file as a zip entry: deflated, or stored when its name says it is compressed already or
/// when deflating does not make it smaller (as `zip` does; an empty file too).
fn prepare_one(entry: &Entry, bytes: &[u8]) -> Result<PreparedZipFile, Error> {
    let build = |method| -> Result<PreparedZipFile, Error> {
        let mut builder = ZipFileBuilder::new(&entry.zip_path, options(entry.mode, method))
            .map_err(|e| zip_error(&entry.source, e))?;
        builder.write_all(bytes).map_err(|e| Error::io(&entry.source, e))?;
        builder.finish().map_err(|e| zip_error(&entry.source, e))
    };
    let name = entry.zip_path.to_ascii_lowercase();
    if COMPRESSED_ALREADY.iter().any(|suffix| name.ends_with(suffix)) {
        return build(CompressionMethod::Stored);
    }
    let deflated = build(CompressionMethod::Deflated)?;
    if deflated.compressed_size() >= bytes.len() as u64 {
        return build(CompressionMethod::Stored);
    }
    Ok(deflated)
}

fn zip_error(path: &Path, source: zip::result::ZipError) -> Error {
    Error::Zip { path: path.to_path_buf(), source }
}

/// Compresses entries on all cores: one task per file, largest first, so a big library (a 14 MB
/// `.so`) starts at once instead of holding up the end; the results come back in entry order.
fn prepare(entries: &[Entry]) -> Result<Vec<PreparedZipFile>, Error> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(entries[i].size));
    let mut done: Vec<(usize, PreparedZipFile)> = order
        .par_iter()
        .with_max_len(1)
        .map(|&i| {
            let entry = &entries[i];
            // Read as collected: a regular file, no bigger than it was then.
            let bytes =
                run_state::fs::read_regular(&entry.source, entry.size).map_err(|e| Error::io(&entry.source, e))?;
            Ok((i, prepare_one(entry, &bytes)?))
        })
        .collect::<Result<_, Error>>()?;
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, file)| file).collect())
}

/// Writes a zip of `entries` (sorted by the caller) through a temporary file and a rename.
pub fn write_entries(path: &Path, entries: &[Entry]) -> Result<(), Error> {
    write_zip(path, entries, None).map(drop)
}

/// What a written zip is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Bytes on disk.
    pub size: u64,
    /// SHA-256 of the zip.
    pub sha256: [u8; 32],
}

/// A `deps.zip` read whole, to copy raw entries from: every copy is then a copy in memory, not a
/// seek and a read. Cloning it shares the bytes and the parsed index.
#[derive(Clone, Debug)]
pub struct DepsZip {
    archive: ZipArchive<Cursor<Arc<[u8]>>>,
    bytes: u64,
}

impl DepsZip {
    /// Reads and indexes a `deps.zip`.
    pub fn open(path: &Path) -> Result<DepsZip, Error> {
        let bytes: Arc<[u8]> = std::fs::read(path).map_err(|e| Error::io(path, e))?.into();
        let size = bytes.len() as u64;
        Ok(DepsZip { archive: ZipArchive::new(Cursor::new(bytes)).map_err(|e| zip_error(path, e))?, bytes: size })
    }
}

/// Writes `own` entries merged in name order with every entry of `deps` (copied raw).
/// A name in both is an error that names the two sources.
pub fn write_zip(path: &Path, own: &[Entry], deps: Option<&Path>) -> Result<Written, Error> {
    let deps = deps.map(DepsZip::open).transpose()?;
    write_zip_from(path, own, deps.as_ref())
}

/// [`write_zip`] with the dependencies read already (shared by the functions that use them).
pub fn write_zip_from(path: &Path, own: &[Entry], deps: Option<&DepsZip>) -> Result<Written, Error> {
    let prepared = prepare(own)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let deps_bytes = deps.map_or(0, |d| d.bytes);
    let mut deps_archive = deps.map(|d| d.archive.clone());
    // Room for the whole zip at once: the compressed entries and their headers.
    let capacity = prepared.iter().map(|f| f.compressed_size() + 128 + 2 * f.file_name_raw().len() as u64).sum::<u64>()
        + deps_bytes;
    let mut writer = ZipWriter::new(Cursor::new(Vec::with_capacity(capacity as usize)));
    let deps_len = deps_archive.as_ref().map_or(0, |a| a.len());
    let mut own_iter = own.iter().zip(prepared).peekable();
    let mut next_dep = 0;
    loop {
        let dep_name = match deps_archive.as_mut() {
            Some(archive) if next_dep < deps_len => match archive.name_for_index(next_dep) {
                Some(name) => Some(name.map_err(|e| zip_error(path, e))?.into_owned()),
                None => None,
            },
            _ => None,
        };
        let take_own = match (own_iter.peek(), &dep_name) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((entry, _)), Some(dep)) => {
                if entry.zip_path == *dep {
                    return Err(Error::DependencyCollision {
                        zip_path: dep.clone(),
                        source_file: entry.source.clone(),
                    });
                }
                entry.zip_path < *dep
            }
        };
        if take_own {
            let (_, file) = own_iter.next().expect("peeked");
            writer.add_prepared_file(file).map_err(|e| zip_error(path, e))?;
        } else if let Some(archive) = deps_archive.as_mut() {
            let file = archive.by_index_raw(next_dep).map_err(|e| zip_error(path, e))?;
            writer.raw_copy_file(file).map_err(|e| zip_error(path, e))?;
            next_dep += 1;
        }
    }
    let bytes = writer.finish().map_err(|e| zip_error(path, e))?.into_inner();
    let written = Written { size: bytes.len() as u64, sha256: Sha256::digest(&bytes).into() };
    let temp =
        tempfile::Builder::new().prefix(".partial-").suffix(".zip").tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    temp.as_file().write_all(&bytes).map_err(|e| Error::io(temp.path(), e))?;
    // A temporary file is created 0600; a zip is for whoever deploys it.
    set_mode(temp.path(), 0o644)?;
    // Not synced: this is the cache; a zip is synced when it is published (`publish`).
    temp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(written)
}

/// Sets a file's permission bits.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| Error::io(path, e))
}

/// Size and SHA-256 of a file.
pub fn describe(path: &Path) -> Result<Written, Error> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok(Written { size, sha256: hasher.finalize().into() })
}

/// Entry names and uncompressed sizes of a zip (for reports and tests).
pub fn list(path: &Path) -> Result<Vec<(String, u64)>, Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_error(path, e))?;
    (0..archive.len())
        .map(|i| {
            let file = archive.by_index_raw(i).map_err(|e| zip_error(path, e))?;
            Ok((file.name().map_err(|e| zip_error(path, e))?.to_string(), file.size()))
        })
        .collect()
}
