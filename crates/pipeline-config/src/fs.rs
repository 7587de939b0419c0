//! Reading files the pipeline did not write: regular files only, with a size bound.
//!
//! A tracked template can be a FIFO, a config can be a link to `/dev/zero`:
//! `std::fs::read` would hang on the first and fill memory with the second.
//! [`read_regular`] opens without blocking, refuses anything but a regular
//! file, and never reads past its bound.

//!
//! Errors are `std::io::Error`s whose message says what is wrong
//! (`is a named pipe, not a regular file`, `is larger than N bytes`), so each
//! crate wraps them with the path in its own error type.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The most a file of a run folder (`diff.json`, a manifest …) may hold.
pub const MAX_RUN_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Opens `path` for reading if it is a regular file (after links), without
/// blocking on a FIFO or a device.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        // Opening a FIFO for reading blocks until a writer comes; O_NONBLOCK returns at once,
        // and the file type is checked before anything is read.
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("is {}, not a regular file", kind_name(kind))));
    }
    Ok(file)
}

/// The whole content of a regular file of at most `limit` bytes.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    // One byte more than the limit tells "exactly at the limit" from "over it".
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::FileTooLarge, format!("is larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// What kind of thing a path is, for messages.
pub fn kind_name(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fifos_devices_and_folders_and_bounds_size() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        // Would hang forever with std::fs::read.
        let err = read_regular(&fifo, 10).unwrap_err();
        assert_eq!(err.to_string(), "is a named pipe, not a regular file");

        let err = read_regular(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(err.to_string().contains("is a device"), "{err}");
        let err = read_regular(dir.path(), 10).unwrap_err();
        assert!(err.to_string().contains("is a folder"), "{err}");

        let file = dir.path().join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_regular(&file, 10).unwrap(), b"0123456789");
        let err = read_regular(&file, 9).unwrap_err();
        assert!(err.to_string().contains("larger than 9 bytes"), "{err}");
    }
}
