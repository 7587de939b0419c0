//! The diff between two commits read in process with gitoxide: no git child on the hot path
//! (a `git` process costs about as much as a whole `source-diff` call).
//!
//! Git stays the authority. Every question here either gets git's exact answer (the same
//! paths and statuses as `git diff --name-status -z --no-renames BASE HEAD -- :(top)
//! :(top,exclude).pipeline`, in the same order) or `None`, and the caller asks git: a
//! revision that is not a full object id, a repository gitoxide will not open (a SHA-256
//! object format, an unknown extension, a repository git would refuse as another user's), an
//! environment that redirects git elsewhere, or an object that is not there (a shallow clone
//! cut above it, a partial clone that would fetch it). Git then answers, or fails with the
//! same typed error as before; gitoxide's own error is dropped there on purpose, since the
//! answer (or the error the user sees) is git's.

use std::path::Path;

use gix::bstr::BString;
use gix::objs::tree::{EntryKind, EntryMode};

use crate::git::{FileChange, FileStatus, in_state_dir, is_object_id};

/// Environment variables under which `git -C ROOT` reads another repository or object store
/// than ROOT's own `.git`, or other settings (`git -c KEY=VALUE` handed to a child, such as
/// `core.useReplaceRefs=false`): with any of them set, only git answers the same way.
const REDIRECTS: &[&str] = &[
    "GIT_DIR",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_WORK_TREE",
    "GIT_CONFIG_PARAMETERS",
];

/// The paths changed from `base` to `head`, each a full object id or `ID^{commit}`, as
/// [`crate::Repo::diff`] returns them; `None` where git must answer.
pub(crate) fn diff(root: &Path, base: &str, head: &str) -> Option<Vec<FileChange>> {
    let (base, head) = (Revision::parse(base)?, Revision::parse(head)?);
    if REDIRECTS.iter().any(|name| std::env::var_os(name).is_some()) {
        return None;
    }
    // Another user's repository is refused, as git refuses it (unless `safe.directory` says otherwise).
    let repo = gix::open_opts(root, gix::open::Options::default().bail_if_untrusted(true)).ok()?;
    let hash = repo.object_hash();
    let base_tree = tree_of(&repo, &base)?;
    let head_tree = tree_of(&repo, &head)?;
    let mut recorder = gix::diff::tree::Recorder::default();
    gix::diff::tree(
        gix::objs::TreeRefIter::from_bytes(&base_tree, hash),
        gix::objs::TreeRefIter::from_bytes(&head_tree, hash),
        gix::diff::tree::State::default(),
        &repo.objects,
        &mut recorder,
    )
    .ok()?;
    Some(changes(recorder.records))
}

/// A revision as the diff is asked for it: a full id, to be peeled to a commit (`^{commit}`) or to a tree.
struct Revision {
    id: gix::ObjectId,
    commit: bool,
}

impl Revision {
    fn parse(rev: &str) -> Option<Revision> {
        let (hex, commit) = match rev.strip_suffix("^{commit}") {
            Some(hex) => (hex, true),
            None => (rev, false),
        };
        // Anything but a full lowercase id (a ref, `HEAD~1`, an abbreviation) is git's to resolve.
        if !is_object_id(hex) {
            return None;
        }
        Some(Revision { id: gix::ObjectId::from_hex(hex.as_bytes()).ok()?, commit })
    }
}

/// The tree's raw data a revision names: tags peeled, then a commit's tree (the empty tree
/// needs no object). `None` for a missing object or one of the wrong kind: git says which.
fn tree_of(repo: &gix::Repository, rev: &Revision) -> Option<Vec<u8>> {
    let object = repo.find_object(rev.id).ok()?;
    let object = if rev.commit { object.peel_to_kind(gix::objs::Kind::Commit).ok()? } else { object };
    Some(object.peel_to_tree().ok()?.detach().data)
}

/// What changed at one path, as git's `--name-status` names it.
fn status(change: &gix::diff::tree::recorder::Change) -> Option<(&BString, FileStatus)> {
    use gix::diff::tree::recorder::Change;
    match change {
        // A tree's own entry is no path: the files under it come as changes of their own.
        Change::Addition { entry_mode, path, .. } => (!entry_mode.is_tree()).then_some((path, FileStatus::Added)),
        Change::Deletion { entry_mode, path, .. } => (!entry_mode.is_tree()).then_some((path, FileStatus::Deleted)),
        Change::Modification { previous_entry_mode, previous_oid, entry_mode, oid, path } => {
            match (previous_entry_mode.is_tree(), entry_mode.is_tree()) {
                (true, true) => None,
                // A directory replaced by a file (or back): the file is new (or gone), the
                // directory's files come as changes of their own.
                (true, false) => Some((path, FileStatus::Added)),
                (false, true) => Some((path, FileStatus::Deleted)),
                (false, false) => {
                    let (before, after) = (kind(*previous_entry_mode), kind(*entry_mode));
                    if before.0 != after.0 {
                        // Git's `T`: file, symlink and submodule are different kinds of entry.
                        Some((path, FileStatus::TypeChanged))
                    } else if before.1 != after.1 || previous_oid != oid {
                        // The executable bit alone is a modification, as in git.
                        Some((path, FileStatus::Modified))
                    } else {
                        // Modes git reads as the same (an old `100664` beside `100644`) and the same object.
                        None
                    }
                }
            }
        }
    }
}

/// An entry's kind as git's `T` tells them apart (regular file, symlink, submodule) and
/// whether it is executable; git canonicalises non-standard modes the same way.
fn kind(mode: EntryMode) -> (u8, bool) {
    match mode.kind() {
        EntryKind::Blob => (0, false),
        EntryKind::BlobExecutable => (0, true),
        EntryKind::Link => (1, false),
        EntryKind::Commit => (2, false),
        EntryKind::Tree => (3, false),
    }
}

/// The recorded changes as [`crate::Repo::diff`] returns them: in git's order (the bytes of
/// the full path; the traversal here is breadth first), non-UTF-8 bytes replaced as in the
/// git path, the state folder left out.
fn changes(records: Vec<gix::diff::tree::recorder::Change>) -> Vec<FileChange> {
    let mut found: Vec<(&BString, FileStatus)> = records.iter().filter_map(status).collect();
    found.sort_by(|a, b| a.0.cmp(b.0));
    found
        .into_iter()
        .map(|(path, status)| FileChange { path: String::from_utf8_lossy(path).into_owned(), status })
        .filter(|change| !in_state_dir(&change.path))
        .collect()
}
