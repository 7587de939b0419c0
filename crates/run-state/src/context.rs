//! The stage context: what every stage starts from, built once from the common options.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pipeline_config::{ConfigError, ConfigFile};

use std::sync::Arc;

use crate::{Error, FileStore, RunDir, Store, StoreChoice};

/// The options every stage shares, as a binary's flags or a caller's values give them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageOptions {
    /// A folder inside the monorepo [default: the current folder]; the root is found from it.
    pub repo: Option<PathBuf>,
    /// The config file [default: ROOT/pipeline.toml].
    pub config: Option<PathBuf>,
    /// The state folder (store, runs, caches) [default: ROOT/.pipeline].
    pub state_dir: Option<PathBuf>,
    /// The status store (`file`, `dynamodb://TABLE`) [default: `[store]` in the config, else `file`].
    pub store: Option<String>,
}

/// What every stage starts from: the monorepo's root, its config read once and its section
/// names checked, and the state folder.
///
/// The root is found one way for every stage: the nearest folder at or above `repo` that
/// holds `.git` (a folder, or a file in a linked worktree); without git (a CodeBuild source
/// zip), the nearest holding `pipeline.toml`; else `repo` itself. So a stage started from
/// `lambda/` works on the same monorepo as one started from the root.
#[derive(Debug, Clone)]
pub struct StageContext {
    /// The monorepo root.
    pub root: PathBuf,
    /// Whether the root is a git work tree.
    pub is_git: bool,
    /// `pipeline.toml`, read once (empty when it does not exist).
    pub config: ConfigFile,
    /// The state folder.
    pub state_dir: PathBuf,
    /// Which status store the stage records to.
    pub store_choice: StoreChoice,
    remote: Option<RemoteStore>,
}

/// A connected remote store (the context stays `Debug` and `Clone`).
#[derive(Clone)]
struct RemoteStore(Arc<dyn Store>);

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteStore")
    }
}

/// How the checked-out tree relates to a run's commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeState {
    /// The tree is the commit, with no uncommitted change.
    Clean,
    /// The run was started with the work tree's changes included: the tree is what was diffed.
    WorktreeRun,
    /// Not a git checkout (a source zip): the tree cannot be checked.
    NotGit,
}

impl StageContext {
    /// Finds the root, reads the config (when it exists) and rejects unknown sections.
    pub fn open(options: &StageOptions) -> Result<StageContext, Error> {
        let start = match &options.repo {
            Some(dir) => dir.clone(),
            None => std::env::current_dir().map_err(|e| Error::io(Path::new("."), e))?,
        };
        let start = std::fs::canonicalize(&start).map_err(|e| Error::io(&start, e))?;
        if !start.is_dir() {
            return Err(Error::io(
                &start,
                std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "not a folder; pass --repo with the monorepo's root",
                ),
            ));
        }
        let (root, is_git) = find_root(&start);
        let config = match &options.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::load_optional(&root.join(pipeline_config::FILE_NAME))?,
        };
        // One reading of the document where it is sound; else each check on its own, for its error.
        let store_choice = match crate::choice::resolve_once(options.store.as_deref(), &config) {
            Some(choice) => choice?,
            None => {
                config.check_section_names()?;
                StoreChoice::resolve(options.store.as_deref(), &config)?
            }
        };
        let state_dir = options.state_dir.clone().unwrap_or_else(|| root.join(pipeline_config::STATE_DIR));
        Ok(StageContext { root, is_git, config, state_dir, store_choice, remote: None })
    }

    /// The config, which this stage cannot do without: an error naming where it was looked for.
    pub fn required_config(&self) -> Result<&ConfigFile, Error> {
        if self.config.exists {
            Ok(&self.config)
        } else {
            Err(Error::Config(ConfigError::file(
                &self.config.path,
                format!(
                    "no pipeline config here; create {} at the monorepo root (see the README) or pass --config",
                    pipeline_config::FILE_NAME
                ),
            )))
        }
    }

    /// The status store chosen ([`StoreChoice`]): the file store, created when needed, or the
    /// remote store [`connect_store`](Self::connect_store) connected (else
    /// [`Error::StoreNotConnected`]).
    pub fn store(&self) -> Result<Arc<dyn Store>, Error> {
        match (&self.store_choice, &self.remote) {
            (_, Some(remote)) => Ok(remote.0.clone()),
            (StoreChoice::File, None) => Ok(Arc::new(self.file_store()?)),
            (choice, None) => Err(Error::StoreNotConnected { choice: choice.clone() }),
        }
    }

    /// The file store in the state folder, whatever the choice.
    pub fn file_store(&self) -> Result<FileStore, Error> {
        FileStore::open(&self.state_dir)
    }

    /// The store when one exists: reading commands must not create `.pipeline/` in the wrong
    /// folder (a remote store always exists once connected).
    pub fn existing_store(&self) -> Result<Option<Arc<dyn Store>>, Error> {
        if self.store_choice != StoreChoice::File || self.state_dir.join(FileStore::FILE_NAME).is_file() {
            Ok(Some(self.store()?))
        } else {
            Ok(None)
        }
    }

    /// Uses `store` as the status store (a store the caller opened: tests, other backends).
    pub fn set_store(&mut self, store: Arc<dyn Store>) {
        self.remote = Some(RemoteStore(store));
    }

    /// Connects the remote store the choice names, in the account `target` reaches (a no-op for
    /// the file store); [`Error::NoTable`] when the table does not exist.
    #[cfg(feature = "dynamodb")]
    pub fn connect_store(&mut self, target: &aws_target::Target) -> Result<(), Error> {
        if let StoreChoice::DynamoDb { table } = &self.store_choice {
            let store = crate::DynamoStore::connect(target, table)?;
            self.set_store(Arc::new(store));
        }
        Ok(())
    }

    /// `--run-dir` when given, else the newest run.
    pub fn run_dir(&self, given: Option<&Path>) -> Result<RunDir, Error> {
        RunDir::open_or_latest(given, &self.state_dir)
    }

    /// The content-hash caches (`.pipeline/cache`).
    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir.join("cache")
    }

    /// Checks that the checked-out tree is the tree of `head` (the run's commit), so what a
    /// stage checks or tests is what it records. `worktree_run`: the run was started with
    /// `--include-worktree`, so the work tree itself is what the run is about.
    ///
    /// One `git status` call; the state folder is left out (it is the pipeline's own output),
    /// and so are untracked files at the root (reports and env files CI steps write there);
    /// untracked files in folders count.
    pub fn check_tree(&self, head: &str, worktree_run: bool) -> Result<TreeState, Error> {
        if worktree_run {
            return Ok(TreeState::WorktreeRun);
        }
        if !self.is_git {
            return Ok(TreeState::NotGit);
        }
        let mut command = Command::new("git");
        command.arg("-C").arg(&self.root).args([
            "status",
            "--porcelain=v2",
            "--branch",
            "-z",
            "--untracked-files=normal",
            "--",
            ".",
        ]);
        if let Ok(inside) = self.state_dir.strip_prefix(&self.root)
            && !inside.as_os_str().is_empty()
        {
            command.arg(format!(":(exclude){}", inside.display()));
        }
        let out = command
            .env("GIT_OPTIONAL_LOCKS", "0")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Git { message: e.to_string() })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::Git { message: stderr.lines().next().unwrap_or("git status failed").to_string() });
        }
        let mut checked_out = None;
        let mut changes = Vec::new();
        for entry in out.stdout.split(|&b| b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            if let Some(oid) = entry.strip_prefix("# branch.oid ") {
                checked_out = Some(oid.to_string());
            } else if let Some(path) = entry.strip_prefix("? ") {
                // An untracked file at the root is what a CI step writes there (`> diff.env`,
                // `--output validate.sarif`), not code; one in a folder can be (a new test).
                if path.contains('/') {
                    changes.push(path.to_string());
                }
            } else if !entry.starts_with('#') {
                // `1 XY … path`, `2 … path` (its original path follows as the next entry).
                changes.push(entry.rsplit(' ').next().unwrap_or(&entry).to_string());
            }
        }
        let checked_out = checked_out.unwrap_or_default();
        if checked_out != head {
            let short = crate::prefix(head, 12);
            return Err(Error::TreeMismatch {
                reason: format!(
                    "the run is for commit {short}, but the checked-out commit is {}",
                    if checked_out == "(initial)" { "none" } else { crate::prefix(&checked_out, 12) }
                ),
                fix: format!("check out {short} first, or start a new run from this checkout"),
            });
        }
        if let Some(first) = changes.first() {
            return Err(Error::TreeMismatch {
                reason: format!("the work tree has {} uncommitted change(s) (first: {first})", changes.len()),
                fix: "commit or stash them, or start the run with --include-worktree to test them".into(),
            });
        }
        Ok(TreeState::Clean)
    }
}

/// The monorepo root and whether it is a git work tree (see [`StageContext`]).
fn find_root(start: &Path) -> (PathBuf, bool) {
    if let Some(dir) = start.ancestors().find(|dir| std::fs::symlink_metadata(dir.join(".git")).is_ok()) {
        return (dir.to_path_buf(), true);
    }
    if let Some(dir) = start.ancestors().find(|dir| dir.join(pipeline_config::FILE_NAME).is_file()) {
        return (dir.to_path_buf(), false);
    }
    (start.to_path_buf(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_found_from_a_subfolder_and_unknown_sections_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("lambda/api")).unwrap();
        std::fs::write(root.join("pipeline.toml"), "[gate]\nallow_skipped = true\n").unwrap();
        let context =
            StageContext::open(&StageOptions { repo: Some(root.join("lambda/api")), ..Default::default() }).unwrap();
        assert_eq!(context.root, root);
        assert!(!context.is_git);
        assert_eq!(context.state_dir, root.join(".pipeline"));
        assert_eq!(context.check_tree("abc", false).unwrap(), TreeState::NotGit);

        std::fs::write(root.join("pipeline.toml"), "[gate]\n\n[valdate]\nx = 1\n").unwrap();
        let err = StageContext::open(&StageOptions { repo: Some(root.clone()), ..Default::default() }).unwrap_err();
        assert!(err.to_string().ends_with("pipeline.toml:3: valdate: unknown section; expected one of: diff, components, runner, gate, lambda, validate, deploy, publish, store, notify, stats"), "{err}");
    }

    #[test]
    fn untracked_files_in_folders_count_and_outputs_at_the_root_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .arg("-C")
                .arg(&root)
                .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        git(&["init", "-q"]);
        std::fs::create_dir_all(root.join("api")).unwrap();
        std::fs::write(root.join("api/handler.py"), "x = 1\n").unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-qm", "one"]);
        let head = git(&["rev-parse", "HEAD"]);
        let context = StageContext::open(&StageOptions { repo: Some(root.clone()), ..Default::default() }).unwrap();
        std::fs::write(root.join("diff.env"), "api_tests_required=true\n").unwrap();
        std::fs::create_dir_all(root.join(".pipeline/runs")).unwrap();
        assert_eq!(context.check_tree(&head, false).unwrap(), TreeState::Clean);
        std::fs::write(root.join("api/test_new.py"), "def test(): pass\n").unwrap();
        let err = context.check_tree(&head, false).unwrap_err();
        assert!(err.to_string().contains("1 uncommitted change(s) (first: api/test_new.py)"), "{err}");
        assert_eq!(context.check_tree(&head, true).unwrap(), TreeState::WorktreeRun);
    }
}
