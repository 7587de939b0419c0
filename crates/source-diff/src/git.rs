//! The few git queries source-diff needs, through the `git` command.
//!
//! Spawning git keeps us exactly in step with the user's git (its config,
//! shallow files, object formats) and costs about a millisecond per call, as
//! much as the rest of a CLI call: the hot path (the diff between two commits)
//! is read in process instead (`objects`), with git as the fallback.

use std::collections::{BTreeMap, BTreeSet};
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

    /// Resolves `head` and answers `queries` (revisions such as `X^{commit}` or `A...B`), with
    /// whether the clone is shallow and its empty tree, in one `git rev-parse`; a query that
    /// names nothing costs one more call for the queries after it. `None`: `head` names no commit.
    ///
    /// Under `--revs-only`, rev-parse prints each revision's ids and stops printing at the first
    /// argument that names nothing; head's tree, which no commit id can equal, follows every
    /// query, so the output splits into one answer per query, and a missing one is the one
    /// whose tree never came.
    pub(crate) fn resolve(&self, head: &str, queries: &[String]) -> Result<Option<Resolved>, Error> {
        let separator = format!("{head}^{{tree}}");
        let mut answers: Vec<Option<Vec<String>>> = Vec::with_capacity(queries.len());
        let mut first: Option<(bool, String, String)> = None;
        loop {
            let mut args = vec!["rev-parse".to_string(), "--revs-only".to_string()];
            if first.is_none() {
                args.extend(["--is-shallow-repository".to_string(), "--show-object-format".to_string()]);
            }
            args.extend([format!("{head}^{{commit}}"), separator.clone()]);
            for query in &queries[answers.len()..] {
                args.extend([query.clone(), separator.clone()]);
            }
            let out = self.git(&args)?;
            let text = String::from_utf8_lossy(&out);
            let mut lines = text.lines();
            let flags = match first {
                Some((shallow, ref empty_tree, _)) => (shallow, empty_tree.clone()),
                None => {
                    let shallow = match lines.next() {
                        Some("true") => true,
                        Some("false") => false,
                        other => return Err(unexpected("--is-shallow-repository", other)),
                    };
                    let empty_tree = match lines.next() {
                        Some("sha1") => "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
                        Some("sha256") => "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321",
                        other => return Err(unexpected("--show-object-format", other)),
                    };
                    (shallow, empty_tree.to_string())
                }
            };
            // Head and its tree; anything else (a range, a tree) names no commit.
            let (Some(id), Some(tree)) = (lines.next(), lines.next()) else { return Ok(None) };
            if !is_object_id(id) || !is_object_id(tree) {
                return Ok(None);
            }
            first.get_or_insert_with(|| (flags.0, flags.1, id.to_string()));
            let mut current = Vec::new();
            for line in lines {
                if line == tree {
                    answers.push(Some(std::mem::take(&mut current)));
                } else {
                    current.push(line.to_string());
                }
            }
            if answers.len() < queries.len() {
                // This query named nothing, and rev-parse printed nothing after it: ask again for the rest.
                answers.push(None);
            }
            if answers.len() == queries.len() {
                break;
            }
        }
        let (shallow, empty_tree, head) = first.expect("set by the first call");
        Ok(Some(Resolved { shallow, empty_tree, head, answers }))
    }

    /// Paths changed from `base` to `head` (a commit or tree id), renames as a delete plus an add.
    /// The state folder (`.pipeline/`) is never part of it.
    ///
    /// Between two full object ids (each maybe with `^{commit}`), read in process (no git child:
    /// the hot path of a CLI call); anything else, or anything the in-process reader cannot
    /// answer, through `git diff`, which stays the authority (see the `objects` module).
    pub fn diff(&self, base: &str, head: &str) -> Result<Vec<FileChange>, Error> {
        if let Some(changes) = self.diff_in_process(base, head) {
            return Ok(changes);
        }
        let out = self.git(DIFF.iter().copied().chain([base, head, "--", ALL_PATHS, EXCLUDE_STATE]))?;
        parse_name_status(&out)
    }

    /// [`Repo::diff`] read in process, or `None` where only git can answer the same way (for
    /// the parity tests, which compare it with `git diff`).
    #[doc(hidden)]
    pub fn diff_in_process(&self, base: &str, head: &str) -> Option<Vec<FileChange>> {
        crate::objects::diff(&self.root, base, head)
    }

    /// Paths changed from `base` to the work tree, with untracked files as added; never the
    /// state folder, even when `.gitignore` does not leave it out.
    pub fn diff_worktree(&self, base: &str) -> Result<Vec<FileChange>, Error> {
        let out = self.git(DIFF.iter().copied().chain([base, "--", ALL_PATHS, EXCLUDE_STATE]))?;
        let mut changes = parse_name_status(&out)?;
        let untracked =
            self.git(["ls-files", "-z", "--others", "--exclude-standard", "--", ALL_PATHS, EXCLUDE_STATE])?;
        changes.extend(
            untracked
                .split(|&b| b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| FileChange { path: String::from_utf8_lossy(p).into_owned(), status: FileStatus::Added })
                .filter(|change| !in_state_dir(&change.path)),
        );
        changes.sort();
        changes.dedup_by(|a, b| a.path == b.path);
        Ok(changes)
    }

    /// The line numbers at `head` (or in the work tree, when `None`) that were added or changed
    /// since `base`, of `paths` (repo-relative files): `git diff -U0`, read from its hunk
    /// headers. Files deleted at head have none; renames count as a delete and an add.
    pub fn changed_lines(
        &self,
        base: &str,
        head: Option<&str>,
        paths: &[String],
    ) -> Result<BTreeMap<String, BTreeSet<u32>>, Error> {
        let mut changed = BTreeMap::new();
        // Bounded argument lists, however many files a component has.
        for chunk in paths.chunks(500) {
            let mut args: Vec<&str> = vec![
                "-c",
                "core.quotePath=false",
                "diff",
                "-U0",
                "--no-color",
                "--no-renames",
                "--no-relative",
                "--no-ext-diff",
                "--no-textconv",
                base,
            ];
            args.extend(head);
            args.push("--");
            args.extend(chunk.iter().map(|p| p.as_str()));
            parse_changed_lines(&self.git(&args)?, &mut changed);
        }
        Ok(changed)
    }

    /// Whether `refname` (`refs/remotes/origin/main`) is likely to exist, from the files of a
    /// plain `.git` folder, without running git. Only a hint for the order of questions: a
    /// wrong guess costs one more git call, never a wrong answer.
    pub(crate) fn probably_has_ref(&self, refname: &str) -> bool {
        let git_dir = self.root.join(".git");
        let common = if git_dir.is_dir() {
            git_dir
        } else {
            // A linked worktree: `.git` is a file naming its folder, whose `commondir` names the shared one.
            let Ok(text) = std::fs::read_to_string(&git_dir) else { return false };
            let Some(dir) = text.trim().strip_prefix("gitdir: ") else { return false };
            let dir = self.root.join(dir);
            match std::fs::read_to_string(dir.join("commondir")) {
                Ok(common) => dir.join(common.trim()),
                Err(_) => dir,
            }
        };
        if common.join(refname).is_file() {
            return true;
        }
        let Ok(packed) = std::fs::read(common.join("packed-refs")) else { return false };
        let needle = format!(" {refname}\n");
        packed.windows(needle.len()).any(|w| w == needle.as_bytes())
    }
}

/// What [`Repo::resolve`] learnt.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// Whether the clone's history is cut off.
    pub(crate) shallow: bool,
    /// The empty tree's id in the repository's object format.
    pub(crate) empty_tree: String,
    /// Head's full commit id.
    pub(crate) head: String,
    /// Per query, the ids it printed (`^ID` for excluded ones), or `None` when it names nothing.
    pub(crate) answers: Vec<Option<Vec<String>>>,
}

/// `git diff` as every diff here runs it: names and statuses, renames as a delete plus an add,
/// paths from the top, no external diff driver, and every submodule bump: a bump is a change,
/// whatever `diff.ignoreSubmodules` or a `.gitmodules` `ignore = all` (read from the work tree,
/// even untracked) would hide.
const DIFF: &[&str] =
    &["diff", "--name-status", "-z", "--no-renames", "--no-relative", "--no-ext-diff", "--ignore-submodules=none"];
/// Every path from the top of the work tree.
const ALL_PATHS: &str = ":(top)";
/// The state folder, never part of a diff.
const EXCLUDE_STATE: &str = ":(top,exclude).pipeline";

/// Whether a repo-relative path lies in the state folder.
pub(crate) fn in_state_dir(path: &str) -> bool {
    path.strip_prefix(pipeline_config::STATE_DIR).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A full hexadecimal object id (SHA-1 or SHA-256), lowercase.
pub(crate) fn is_object_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn unexpected(what: &str, line: Option<&str>) -> Error {
    Error::Git {
        command: format!("rev-parse {what}"),
        message: format!("unexpected output `{}`; install a newer git", line.unwrap_or("")),
    }
}

fn run<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(dir: &Path, args: I) -> Result<Output, Error> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // Read-only queries must not take the index lock a concurrent git may hold.
        .env("GIT_OPTIONAL_LOCKS", "0")
        // Pathspec magic (`:(exclude)`) must keep its meaning whatever the caller's environment says.
        .env_remove("GIT_LITERAL_PATHSPECS")
        .env_remove("GIT_GLOB_PATHSPECS")
        .env_remove("GIT_NOGLOB_PATHSPECS")
        .env_remove("GIT_ICASE_PATHSPECS")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::GitNotRunnable { source })
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
        let path = String::from_utf8_lossy(path).into_owned();
        if !in_state_dir(&path) {
            changes.push(FileChange { path, status });
        }
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

/// Reads `+++ b/PATH` and `@@ -a,b +c,d @@` lines of a `-U0` diff into added line numbers.
/// A name git still quotes (a tab, a newline or a quote in it) is skipped.
fn parse_changed_lines(out: &[u8], changed: &mut BTreeMap<String, BTreeSet<u32>>) {
    let mut current: Option<String> = None;
    for line in out.split(|&b| b == b'\n') {
        if let Some(path) = line.strip_prefix(b"+++ ") {
            current = path.strip_prefix(b"b/").map(|p| String::from_utf8_lossy(p).into_owned());
            continue;
        }
        let (Some(path), Some(hunk)) = (current.as_ref(), line.strip_prefix(b"@@ ")) else { continue };
        // `-a[,b] +c[,d] @@`: the new side is `c` and `d` lines (1 when `,d` is left out).
        let hunk = String::from_utf8_lossy(hunk);
        let Some(new) = hunk.split(' ').find_map(|field| field.strip_prefix('+')) else { continue };
        let (start, count) = match new.split_once(',') {
            Some((start, count)) => (start.parse::<u32>().ok(), count.parse::<u32>().ok()),
            None => (new.parse::<u32>().ok(), Some(1)),
        };
        if let (Some(start), Some(count)) = (start, count) {
            changed.entry(path.clone()).or_default().extend(start..start.saturating_add(count));
        }
    }
}

#[cfg(test)]
mod changed_line_tests {
    use super::*;

    #[test]
    fn hunk_headers_give_the_new_line_numbers() {
        let diff = b"diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x\n+y\n@@ -5,0 +6,2 @@ def f():\n+a\n+b\n@@ -9,2 +11,0 @@\n-c\n-d\n\
                     diff --git a/gone.py b/gone.py\n--- a/gone.py\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-x\n-y\n";
        let mut changed = BTreeMap::new();
        parse_changed_lines(diff, &mut changed);
        assert_eq!(changed, BTreeMap::from([("a.py".to_string(), BTreeSet::from([1, 6, 7]))]));
    }
}
