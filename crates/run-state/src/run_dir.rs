//! The run folder: how stages hand files to each other (`.pipeline/runs/<run-id>/`).
//!
//! Every file of a run is named here once, by [`RunFile`], with the stage that
//! writes it; a stage that needs a file an earlier stage did not write gets one
//! message naming that stage ([`Error::MissingInput`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Error;

/// A file of a run, and who writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunFile {
    /// `diff.json`: source-diff's report.
    Diff,
    /// `validate.json`: validate's findings.
    Validate,
    /// `packages/manifest.json`: lambda-packager's manifest, beside the zips.
    PackageManifest,
    /// `stack-outputs.json`: stack-deployer's outputs, per environment and stack.
    StackOutputs,
    /// `publish.json`: frontend-publisher's summary.
    Publish,
    /// `report.md`: the run's Markdown report.
    ReportMarkdown,
    /// `report.json`: the run's JSON report.
    ReportJson,
    /// `junit.xml`: the run's JUnit report.
    Junit,
    /// `deployed-to.json`: the embedded emulator a run deployed to (`cargo xtask pipeline`), so a
    /// resumed run can tell it is still the one that holds its deploys.
    Emulator,
}

impl RunFile {
    /// Every file, in pipeline order.
    pub const ALL: &'static [RunFile] = &[
        RunFile::Diff,
        RunFile::Validate,
        RunFile::PackageManifest,
        RunFile::StackOutputs,
        RunFile::Publish,
        RunFile::ReportMarkdown,
        RunFile::ReportJson,
        RunFile::Junit,
        RunFile::Emulator,
    ];

    /// Its file name (the last part of [`RunFile::relative_path`]).
    pub const fn file_name(self) -> &'static str {
        match self {
            RunFile::PackageManifest => "manifest.json",
            other => other.relative_path(),
        }
    }

    /// Its path inside the run folder.
    pub const fn relative_path(self) -> &'static str {
        match self {
            RunFile::Diff => "diff.json",
            RunFile::Validate => "validate.json",
            RunFile::PackageManifest => "packages/manifest.json",
            RunFile::StackOutputs => "stack-outputs.json",
            RunFile::Publish => "publish.json",
            RunFile::ReportMarkdown => "report.md",
            RunFile::ReportJson => "report.json",
            RunFile::Junit => "junit.xml",
            RunFile::Emulator => "deployed-to.json",
        }
    }

    /// The command that writes it, named when it is missing.
    pub fn written_by(self) -> &'static str {
        match self {
            RunFile::Diff => "`source-diff --new-run`",
            RunFile::Validate => "`validate`",
            RunFile::PackageManifest => "`lambda-packager`",
            RunFile::StackOutputs => "`stack-deployer`",
            RunFile::Publish => "`frontend-publisher`",
            RunFile::ReportMarkdown | RunFile::ReportJson | RunFile::Junit => "`status-report show`",
            RunFile::Emulator => "`cargo xtask pipeline` (its deploy to the embedded emulator)",
        }
    }
}

/// One run's folder under `<monorepo>/.pipeline/runs/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    /// The run id.
    pub run_id: String,
    /// The folder.
    pub path: PathBuf,
}

/// The folder under the state folder that holds the runs.
const RUNS: &str = "runs";
/// The file under `runs/` naming the newest run.
const LATEST: &str = "LATEST";
/// The folder of a run that holds the step logs.
const LOGS: &str = "logs";
/// The folder of a run that holds the packages.
const PACKAGES: &str = "packages";

impl RunDir {
    /// Creates the folder of a new run and makes it the latest.
    pub fn create(state_dir: &Path, run_id: &str) -> Result<RunDir, Error> {
        crate::check_name("run id", run_id)?;
        let runs = state_dir.join(RUNS);
        let path = runs.join(run_id);
        std::fs::create_dir_all(path.join(LOGS)).map_err(|e| Error::io(&path, e))?;
        write_atomic(&runs.join(LATEST), format!("{run_id}\n").as_bytes())?;
        Ok(RunDir { run_id: run_id.into(), path })
    }

    /// The newest run's folder, for stage binaries started without `--run-dir`.
    pub fn latest(state_dir: &Path) -> Result<RunDir, Error> {
        let runs = state_dir.join(RUNS);
        let marker = runs.join(LATEST);
        let no_run = || Error::NoRun { state_dir: state_dir.to_path_buf() };
        let run_id = crate::fs::read_regular(&marker, 4096).map_err(|_| no_run())?;
        let run_id = String::from_utf8_lossy(&run_id).trim().to_string();
        if crate::check_name("run id", &run_id).is_err() {
            return Err(no_run());
        }
        RunDir::open(&runs.join(&run_id))
    }

    /// An existing run folder.
    pub fn open(path: &Path) -> Result<RunDir, Error> {
        if !path.is_dir() {
            return Err(Error::NoRunDir { path: path.to_path_buf() });
        }
        let run_id = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(RunDir { run_id, path: path.to_path_buf() })
    }

    /// `--run-dir` when given, else the newest run under `state_dir`.
    pub fn open_or_latest(run_dir: Option<&Path>, state_dir: &Path) -> Result<RunDir, Error> {
        match run_dir {
            Some(path) => RunDir::open(path),
            None => RunDir::latest(state_dir),
        }
    }

    /// Where a file of the run is (whether or not it exists yet).
    pub fn file(&self, file: RunFile) -> PathBuf {
        self.path.join(file.relative_path())
    }

    /// A file of the run, which a stage needs: a clear error naming the stage to run first
    /// when it is missing.
    pub fn input(&self, file: RunFile) -> Result<PathBuf, Error> {
        let path = self.file(file);
        if path.is_file() { Ok(path) } else { Err(Error::MissingInput { path, written_by: file.written_by() }) }
    }

    /// Reads and parses a JSON file of the run, with errors naming the stage to run first.
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, file: RunFile) -> Result<T, Error> {
        let path = self.input(file)?;
        let bytes = crate::fs::read_regular(&path, crate::fs::MAX_RUN_FILE_BYTES).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::BadRunFile {
            path: path.clone(),
            message: format!("not what {} writes ({e}); run it again", file.written_by()),
        })
    }

    /// The commit the run diffed (`head` of the diff stage's file), read without the rest of
    /// the diff: the commit every stage records its steps under.
    pub fn head(&self) -> Result<String, Error> {
        #[derive(serde::Deserialize)]
        struct Head {
            head: String,
        }
        Ok(self.read_json::<Head>(RunFile::Diff)?.head)
    }

    /// Writes a file of the run atomically.
    pub fn write(&self, file: RunFile, bytes: &[u8]) -> Result<PathBuf, Error> {
        let path = self.file(file);
        write_atomic(&path, bytes)?;
        Ok(path)
    }

    /// The folder of the step logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.path.join(LOGS)
    }

    /// The folder of the packages (the zips beside [`RunFile::PackageManifest`]).
    pub fn packages_dir(&self) -> PathBuf {
        self.path.join(PACKAGES)
    }

    /// The log file of one component's step. Component names are checked when the config
    /// is loaded; this only joins.
    pub fn log_path(&self, component: &str, step: &str) -> PathBuf {
        self.logs_dir().join(format!("{component}-{step}.log"))
    }
}

/// The runs folder of a state folder (`.pipeline/runs`).
pub fn runs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(RUNS)
}

/// Writes a file through a temporary file in the same folder and a rename,
/// so readers see the old file or the new one, never half of one. The file is
/// readable by everyone (0644), as files written by `cp` or `zip` are: a
/// temporary file starts 0600, which CI artifact uploads and other users trip on.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// [`write_atomic`] for content written by a closure (a zip, a large report).
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    write(file.as_file_mut()).map_err(|e| Error::io(path, e))?;
    file.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(|e| Error::io(path, e))?;
    file.as_file().sync_data().map_err(|e| Error::io(path, e))?;
    file.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
