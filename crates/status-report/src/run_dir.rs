//! The run folder: how stages hand files to each other (`.pipeline/runs/<run-id>/`).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Error;

/// One run's folder under `<monorepo>/.pipeline/runs/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    /// The run id.
    pub run_id: String,
    /// The folder.
    pub path: PathBuf,
}

/// The file under `runs/` naming the newest run.
const LATEST: &str = "LATEST";

impl RunDir {
    /// Creates the folder of a new run and makes it the latest.
    pub fn create(state_dir: &Path, run_id: &str) -> Result<RunDir, Error> {
        let runs = state_dir.join("runs");
        let path = runs.join(run_id);
        std::fs::create_dir_all(path.join("logs")).map_err(|e| Error::io(&path, e))?;
        write_atomic(&runs.join(LATEST), format!("{run_id}\n").as_bytes())?;
        Ok(RunDir { run_id: run_id.into(), path })
    }

    /// The newest run's folder, for stage binaries started without `--run-dir`.
    pub fn latest(state_dir: &Path) -> Result<RunDir, Error> {
        let runs = state_dir.join("runs");
        let marker = runs.join(LATEST);
        let run_id = std::fs::read_to_string(&marker)
            .map_err(|_| Error::NoRun { state_dir: state_dir.to_path_buf() })?
            .trim()
            .to_string();
        RunDir::open(&runs.join(&run_id))
    }

    /// An existing run folder.
    pub fn open(path: &Path) -> Result<RunDir, Error> {
        if !path.is_dir() {
            return Err(Error::NoRun { state_dir: path.to_path_buf() });
        }
        let run_id = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(RunDir { run_id, path: path.to_path_buf() })
    }

    /// A file of the run, which a stage needs: a clear error when an earlier stage did not write it.
    pub fn input(&self, name: &str, written_by: &str) -> Result<PathBuf, Error> {
        let path = self.path.join(name);
        if path.is_file() { Ok(path) } else { Err(Error::MissingInput { path, written_by: written_by.into() }) }
    }

    /// The log file of one component's step.
    pub fn log_path(&self, component: &str, step: &str) -> PathBuf {
        self.path.join("logs").join(format!("{component}-{step}.log"))
    }
}

/// Writes a file through a temporary file in the same folder and a rename,
/// so readers see the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    file.write_all(bytes).map_err(|e| Error::io(path, e))?;
    file.as_file().sync_data().map_err(|e| Error::io(path, e))?;
    file.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
