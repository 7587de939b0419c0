//! The diff between two commits read in process (gitoxide) against `git diff --name-status -z
//! --no-renames` on a history with every kind of change, for every pair of commits: a missed
//! change there would be a false green.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use source_diff::{FileChange, FileStatus, Repo};
use test_support::GitRepo;

/// The empty tree (SHA-1), the base of a first commit.
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// Runs git in `dir` with raw arguments and optional stdin; panics when it fails.
fn git_raw(dir: &Path, args: &[&OsStr], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, stdin.unwrap_or_default()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// What `Repo::diff` returned before it read objects in process: git's records, parsed the same way.
fn git_diff(dir: &Path, base: &str, head: &str) -> Vec<FileChange> {
    let args = [
        "diff",
        "--name-status",
        "-z",
        "--no-renames",
        "--no-relative",
        "--no-ext-diff",
        "--ignore-submodules=none",
        base,
        head,
        "--",
        ":(top)",
        ":(top,exclude).pipeline",
    ];
    let out = git_raw(dir, &args.map(OsStr::new), None);
    let fields: Vec<&[u8]> = out.split(|&b| b == 0).filter(|f| !f.is_empty()).collect();
    fields
        .chunks(2)
        .map(|record| FileChange {
            path: String::from_utf8_lossy(record[1]).into_owned(),
            status: match record[0] {
                b"A" => FileStatus::Added,
                b"M" => FileStatus::Modified,
                b"D" => FileStatus::Deleted,
                b"T" => FileStatus::TypeChanged,
                other => panic!("unexpected status {}", String::from_utf8_lossy(other)),
            },
        })
        .collect()
}

/// A history built in the index alone (no work tree), so that any path, mode and submodule can be in it.
struct History {
    repo: GitRepo,
    commits: Vec<String>,
}

impl History {
    fn new() -> History {
        History { repo: GitRepo::new(), commits: Vec::new() }
    }

    fn blob(&self, contents: &str) -> String {
        let out =
            git_raw(self.repo.path(), &["hash-object", "-w", "--stdin"].map(OsStr::new), Some(contents.as_bytes()));
        String::from_utf8(out).unwrap().trim().to_string()
    }

    /// Sets entries (`mode`, object id, raw path); mode `0` removes the path.
    fn set(&self, entries: &[(&str, &str, &[u8])]) {
        let mut info = Vec::new();
        for (mode, id, path) in entries {
            info.extend_from_slice(format!("{mode} {id}\t").as_bytes());
            info.extend_from_slice(path);
            info.push(0);
        }
        git_raw(self.repo.path(), &["update-index", "-z", "--index-info"].map(OsStr::new), Some(&info));
    }

    fn file(&self, path: &[u8], contents: &str) {
        self.set(&[("100644", &self.blob(contents), path)]);
    }

    fn remove(&self, path: &[u8]) {
        self.set(&[("0", "0000000000000000000000000000000000000000", path)]);
    }

    fn commit(&mut self, message: &str) {
        self.repo.git(&["commit", "-q", "--allow-empty", "--no-verify", "-m", message]);
        self.commits.push(self.repo.head());
    }
}

/// Every case at once: modes, kinds, submodules, folders replaced by files and back, odd names.
fn history() -> History {
    let mut h = History::new();
    let other_commit = "1111111111111111111111111111111111111111";
    let another_commit = "2222222222222222222222222222222222222222";

    // 0: the first commit (against the empty tree: all added).
    for path in [
        &b"a.txt"[..],
        b"a-b",
        b"a0",
        b"a/x",
        b"dir/x.py",
        b"dir/sub/y.py",
        b"sp ace/f i.txt",
        "\u{e9}t\u{e9}/\u{fc}ber.txt".as_bytes(),
        b"raw/\xff\xfe.bin",
        b"script.sh",
        b"link",
        b"d2/f",
        b".pipeline/state.json",
        b".pipelines/kept.txt",
    ] {
        h.file(path, &format!("{} one\n", String::from_utf8_lossy(path)));
    }
    h.set(&[("160000", other_commit, b"vendor/lib")]);
    h.commit("first");

    // 1: content, exec bit alone, file to symlink, submodule moved, a delete, an add, the state folder.
    h.file(b"a.txt", "a two\n");
    let script = h.blob("script.sh one\n");
    h.set(&[("100755", &script, b"script.sh")]);
    h.set(&[("120000", &h.blob("a.txt"), b"link")]);
    h.set(&[("160000", another_commit, b"vendor/lib")]);
    h.remove(b"dir/sub/y.py");
    h.file(b"new file.txt", "new\n");
    h.file(b".pipeline/state.json", "state two\n");
    h.commit("second");

    // 2: a folder replaced by a file, a file by a submodule, a symlink by a file, non-UTF-8 content.
    h.remove(b"d2/f");
    h.file(b"d2", "now a file\n");
    h.remove(b"a.txt");
    h.set(&[("160000", other_commit, b"a.txt")]);
    h.remove(b"link");
    h.file(b"link", "a file again\n");
    h.file(b"raw/\xff\xfe.bin", "changed\n");
    h.file(b"a/y", "beside x\n");
    h.commit("third");

    // 3: a folder replaced by a submodule, a file by a folder, a submodule removed, exec bit back.
    h.remove(b"dir/x.py");
    h.set(&[("160000", another_commit, b"dir")]);
    h.remove(b"d2");
    h.file(b"d2/g", "a folder again\n");
    h.remove(b"vendor/lib");
    h.file(b"script.sh", "script.sh one\n");
    h.remove(b"a/x");
    h.commit("fourth");

    // 4: no change at all.
    h.commit("empty");

    // 5: a submodule replaced by a folder, a symlink added, a file made executable with new content.
    h.remove(b"dir");
    h.file(b"dir/back.py", "back\n");
    h.set(&[("120000", &h.blob("d2/g"), b"to-d2")]);
    h.set(&[("100755", &h.blob("a-b two\n"), b"a-b")]);
    h.commit("sixth");
    h
}

/// The in-process answer for `base`..`head`, which must be there and equal git's.
fn assert_same(repo: &Repo, dir: &Path, base: &str, head: &str) {
    let ours = repo.diff_in_process(base, head).unwrap_or_else(|| panic!("no in-process answer for {base} {head}"));
    assert_eq!(ours, git_diff(dir, base, head), "{base} -> {head}");
}

#[test]
fn every_pair_of_commits_matches_git() {
    let h = history();
    let dir = h.repo.path();
    let repo = Repo::open(dir).unwrap();
    let bases: Vec<&str> = std::iter::once(EMPTY_TREE).chain(h.commits.iter().map(String::as_str)).collect();
    let mut statuses = std::collections::BTreeSet::new();
    for base in &bases {
        for head in &h.commits {
            assert_same(&repo, dir, base, head);
            // As the hot path asks: peeled to commits (the empty tree is no commit).
            if *base != EMPTY_TREE {
                assert_same(&repo, dir, &format!("{base}^{{commit}}"), &format!("{head}^{{commit}}"));
            }
            statuses.extend(repo.diff(base, head).unwrap().into_iter().map(|c| c.status));
        }
    }
    // The history shows every status, and the cases it was built for are there as git names them.
    let all = [FileStatus::Added, FileStatus::Modified, FileStatus::Deleted, FileStatus::TypeChanged];
    assert_eq!(statuses.into_iter().collect::<Vec<_>>(), all);
    let second = repo.diff_in_process(&h.commits[0], &h.commits[1]).unwrap();
    for (path, status) in [
        ("script.sh", FileStatus::Modified),
        ("link", FileStatus::TypeChanged),
        ("vendor/lib", FileStatus::Modified),
        ("dir/sub/y.py", FileStatus::Deleted),
        ("new file.txt", FileStatus::Added),
    ] {
        assert!(second.contains(&FileChange { path: path.into(), status }), "{path} in {second:?}");
    }
    assert!(!second.iter().any(|c| c.path.starts_with(".pipeline/")), "{second:?}");
    let third = repo.diff_in_process(&h.commits[1], &h.commits[2]).unwrap();
    for (path, status) in [
        ("d2/f", FileStatus::Deleted),
        ("d2", FileStatus::Added),
        ("a.txt", FileStatus::TypeChanged),
        ("raw/\u{fffd}\u{fffd}.bin", FileStatus::Modified),
    ] {
        assert!(third.contains(&FileChange { path: path.into(), status }), "{path} in {third:?}");
    }
    assert_eq!(repo.diff_in_process(&h.commits[3], &h.commits[4]).unwrap(), []);
}

#[test]
fn an_annotated_tag_is_peeled_to_its_commit() {
    let h = history();
    h.repo.git(&["tag", "-a", "-m", "release", "v1", &h.commits[1]]);
    let tag = h.repo.git(&["rev-parse", "v1"]);
    let repo = Repo::open(h.repo.path()).unwrap();
    assert_same(&repo, h.repo.path(), &format!("{tag}^{{commit}}"), &format!("{}^{{commit}}", h.commits[3]));
}

#[test]
fn what_only_git_can_answer_is_left_to_git() {
    let h = history();
    let repo = Repo::open(h.repo.path()).unwrap();
    // Revisions that are no full ids: git resolves them.
    assert_eq!(repo.diff_in_process("HEAD~1", "HEAD"), None);
    assert_eq!(repo.diff("HEAD~1", "HEAD").unwrap(), git_diff(h.repo.path(), "HEAD~1", "HEAD"));
    // A blob is neither commit nor tree.
    let blob = h.blob("a blob\n");
    assert_eq!(repo.diff_in_process(&blob, &h.commits[1]), None);
    assert!(repo.diff(&format!("{blob}^{{commit}}"), &h.commits[1]).is_err());
}

#[test]
fn a_submodule_bump_is_a_change_whatever_gitmodules_says() {
    let h = history();
    // `ignore = all` in the work tree's .gitmodules (read by git even untracked) would make a
    // bare `git diff` print nothing for `vendor/lib`, moved between the first two commits.
    std::fs::write(
        h.repo.path().join(".gitmodules"),
        "[submodule \"lib\"]\n\tpath = vendor/lib\n\turl = ../lib\n\tignore = all\n",
    )
    .unwrap();
    let repo = Repo::open(h.repo.path()).unwrap();
    let bumped = FileChange { path: "vendor/lib".into(), status: FileStatus::Modified };
    let (first, second) = (&h.commits[0], &h.commits[1]);
    assert!(repo.diff_in_process(first, second).unwrap().contains(&bumped));
    // Through git (a revision only git resolves): the same change.
    let through_git = repo.diff(&format!("{second}~1"), second).unwrap();
    assert!(through_git.contains(&bumped), "{through_git:?}");
}

#[test]
fn a_shallow_clone_answers_in_process_what_it_has_and_git_the_rest() {
    let h = history();
    let clone = tempfile::tempdir().unwrap();
    let target = clone.path().join("clone");
    let status = Command::new("git")
        .args(["clone", "-q", "--no-local", "--depth", "2"])
        .arg(format!("file://{}", h.repo.path().display()))
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success());
    let repo = Repo::open(&target).unwrap();
    let (head, parent, first) = (&h.commits[5], &h.commits[4], &h.commits[0]);
    assert_same(&repo, &target, parent, head);
    assert_same(&repo, &target, EMPTY_TREE, head);
    // The first commit is not in the clone: git says so, with the same typed error as before.
    assert_eq!(repo.diff_in_process(first, head), None);
    let err = repo.diff(&format!("{first}^{{commit}}"), &format!("{head}^{{commit}}")).unwrap_err();
    assert!(matches!(err, source_diff::Error::Git { .. }), "{err:?}");
}

#[test]
fn a_sha256_repository_is_left_to_git() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let git = |args: &[&str]| {
        let out = git_raw(dir, &args.iter().map(OsStr::new).collect::<Vec<_>>(), None);
        String::from_utf8(out).unwrap().trim().to_string()
    };
    git(&["init", "-q", "--object-format=sha256", "-b", "main"]);
    let commit = |files: &[(&str, &str)], message: &str| {
        for (path, contents) in files {
            std::fs::write(dir.join(path), contents).unwrap();
        }
        git(&["add", "-A"]);
        git(&["-c", "commit.gpgsign=false", "commit", "-q", "-m", message]);
        git(&["rev-parse", "HEAD"])
    };
    let first = commit(&[("a.txt", "one\n")], "first");
    let second = commit(&[("a.txt", "two\n"), ("b.txt", "new\n")], "second");
    let handle = Repo::open(dir).unwrap();
    assert_eq!(handle.diff_in_process(&first, &second), None);
    let changes = handle.diff(&first, &second).unwrap();
    assert_eq!(changes, git_diff(dir, &first, &second));
    assert_eq!(changes.len(), 2);
}
