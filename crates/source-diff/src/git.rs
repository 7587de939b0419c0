//! The few git queries source-diff needs, through the `git` command.
//!
//! Spawning git keeps us exactly in step with the user's git (its config,
//! shallow files, object formats) and costs about a millisecond per call; the
//! hot path (one diff per pair of commits) is a single call.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::{Deserialize, Serialize};

use crate::Error;

/// A git repository on disk.
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
}

/// What happened to a path between base and head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    /// New at head.
    Added,
    /// Changed content.
    Modified,
    /// Gone at head.
    Deleted,
    /// Changed kind (file, symlink, submodule).
    TypeChanged,
    /// Unmerged (conflicted), in a work tree.
    Unmerged,
}

/// One changed path, repo-relative with `/` separators.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileChange {
    /// The path.
    pub path: String,
    /// How it changed.
    pub status: FileStatus,
}

impl Repo {
    /// Opens the repository whose work tree contains `dir`.
    pub fn open(dir: &Path) -> Result<Repo, Error> {
        if !dir.is_dir() {
            return Err(Error::NotARepo { path: dir.to_path_buf(), detail: "no such directory".into() });
        }
        let out = run(dir, ["rev-parse", "--show-toplevel"])?;
        if !out.status.success() {
            return Err(Error::NotARepo { path: dir.to_path_buf(), detail: first_line(&out.stderr) });
        }
        let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim_end());
        Ok(Repo { root })
    }

    /// The repository whose work tree's top is `root` (found by the stage context), with no
    /// git call: a stage binary's first git call is then its first real question.
    pub fn at_root(root: &Path) -> Repo {
        Repo { root: root.to_path_buf() }
    }

    /// The top of the work tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs git here and returns stdout, or the error git printed.
    pub(crate) fn git<I, S>(&self, args: I) -> Result<Vec<u8>, Error>
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<OsStr>,
    {
        let out = run(&self.root, args.clone())?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(Error::Git {
                command: args
                    .into_iter()
                    .map(|a| a.as_ref().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
                message: first_line(&out.stderr),
            })
        }
    }

    /// Runs git and tells only whether it succeeded (for yes/no queries).
    fn succeeds<I: IntoIterator<Item = S> + Clone, S: AsRef<OsStr>>(&self, args: I) -> Result<bool, Error> {
        Ok(run(&self.root, args)?.status.success())
    }

    /// The full commit id `rev` names, or `None` when it names no commit here.
    pub fn resolve_commit(&self, rev: &str) -> Result<Option<String>, Error> {
        let out =
            run(&self.root, ["rev-parse", "--verify", "--quiet", "--end-of-options", &format!("{rev}^{{commit}}")])?;
        Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }

    /// Whether the clone is shallow (its history is cut off).
    pub fn is_shallow(&self) -> Result<bool, Error> {
        Ok(self.git(["rev-parse", "--is-shallow-repository"])?.starts_with(b"true"))
    }

    /// Whether `ancestor` is reachable from `descendant`.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, Error> {
        self.succeeds(["merge-base", "--is-ancestor", ancestor, descendant])
    }

    /// The best common ancestor of two commits, if they have one.
    pub fn merge_base(&self, a: &str, b: &str) -> Result<Option<String>, Error> {
        let out = run(&self.root, ["merge-base", a, b])?;
        Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }

    /// The id of the empty tree in this repository's object format.
    pub fn empty_tree(&self) -> Result<String, Error> {
        let out = self.git(["hash-object", "-t", "tree", "/dev/null"])?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// Every tracked file, repo-relative.
    pub fn tracked_files(&self) -> Result<Vec<String>, Error> {
        let out = self.git(["ls-files", "-z"])?;
        Ok(out.split(|&b| b == 0).filter(|p| !p.is_empty()).map(|p| String::from_utf8_lossy(p).into_owned()).collect())
    }

    /// Paths changed from `base` to `head` (a commit or tree id), renames as a delete plus an add.
    pub fn diff(&self, base: &str, head: &str) -> Result<Vec<FileChange>, Error> {
        let out = self.git([
            "diff",
            "--name-status",
            "-z",
            "--no-renames",
            "--no-relative",
            "--no-ext-diff",
            base,
            head,
            "--",
        ])?;
        parse_name_status(&out)
    }

    /// Paths changed from `base` to the work tree, with untracked files as added.
    pub fn diff_worktree(&self, base: &str) -> Result<Vec<FileChange>, Error> {
        let out =
            self.git(["diff", "--name-status", "-z", "--no-renames", "--no-relative", "--no-ext-diff", base, "--"])?;
        let mut changes = parse_name_status(&out)?;
        let untracked = self.git(["ls-files", "-z", "--others", "--exclude-standard"])?;
        changes.extend(
            untracked
                .split(|&b| b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| FileChange { path: String::from_utf8_lossy(p).into_owned(), status: FileStatus::Added }),
        );
        changes.sort();
        changes.dedup_by(|a, b| a.path == b.path);
        Ok(changes)
    }
}

fn run<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(dir: &Path, args: I) -> Result<Output, Error> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // Read-only queries must not take the index lock a concurrent git may hold.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::GitNotRunnable { message: e.to_string() })
}

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    line.strip_prefix("fatal: ").unwrap_or(line).to_string()
}

/// Parses `git diff --name-status -z` output: `STATUS\0PATH\0` records.
fn parse_name_status(out: &[u8]) -> Result<Vec<FileChange>, Error> {
    let mut fields = out.split(|&b| b == 0).filter(|f| !f.is_empty());
    let mut changes = Vec::new();
    while let Some(status) = fields.next() {
        let status = match status.first() {
            Some(b'A') => FileStatus::Added,
            Some(b'M') => FileStatus::Modified,
            Some(b'D') => FileStatus::Deleted,
            Some(b'T') => FileStatus::TypeChanged,
            Some(b'U') => FileStatus::Unmerged,
            _ => {
                return Err(Error::Git {
                    command: "diff --name-status".into(),
                    message: format!("unexpected status `{}`", String::from_utf8_lossy(status)),
                });
            }
        };
        let Some(path) = fields.next() else {
            return Err(Error::Git { command: "diff --name-status".into(), message: "truncated output".into() });
        };
        changes.push(FileChange { path: String::from_utf8_lossy(path).into_owned(), status });
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_status_records() {
        let out = b"M\0a b.txt\0D\0old\0A\0new/\xc3\xa9.py\0";
        let changes = parse_name_status(out).unwrap();
        assert_eq!(
            changes,
            vec![
                FileChange { path: "a b.txt".into(), status: FileStatus::Modified },
                FileChange { path: "old".into(), status: FileStatus::Deleted },
                FileChange { path: "new/é.py".into(), status: FileStatus::Added },
            ]
        );
    }

    #[test]
    fn rejects_unknown_status() {
        assert!(parse_name_status(b"X\0path\0").is_err());
    }
}
