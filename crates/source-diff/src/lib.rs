//! Which components of a monorepo changed between two commits, and the flags that follow.
//!
//! `source-diff` reads the component catalogue from `pipeline.toml`
//! (`[components.NAME]` with `paths`, `exclude` and `depends_on` globs),
//! chooses a base commit (and says why), asks git which paths changed, and
//! maps them to components. Everything downstream (which tests to run, which
//! stacks to deploy) reads the resulting [`DiffReport`].
//!
//! ```no_run
//! use source_diff::{BaseRequest, Components, Repo};
//!
//! let repo = Repo::open("path/to/monorepo".as_ref())?;
//! let components = Components::load(&repo.root().join("pipeline.toml"))?;
//! let report = source_diff::diff(&repo, &components, &BaseRequest::default(), "HEAD", false)?;
//! for (name, change) in &report.components {
//!     if change.changed {
//!         println!("{name} changed because of {:?}", change.files);
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Choosing the base is the part users care most about, so it is always
//! reported with its reason. In order: an explicit base; the commit of the
//! last successful run, while it is still an ancestor of head; the merge-base
//! with the default branch; the first parent of head; the empty tree for a
//! first commit. A shallow clone whose history does not reach a base is an
//! error unless [`BaseRequest::all_on_missing_base`] asks for every component
//! to be marked changed, with that reason in the report.

mod config;
mod git;
mod globs;
mod objects;
mod output;
mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use config::{Component, ComponentSettings, Components, DiffSettings, RawConfig, StepCommand};
pub use git::{FileChange, FileStatus, Repo};
pub use output::{render_env, render_github};
pub use pipeline_config::ConfigError;
pub use run::{RunError, begin_run};

/// Everything that can go wrong, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory is not inside a git work tree.
    #[error("{} is not a git repository ({detail}); pass --repo with the monorepo's root", path.display())]
    NotARepo {
        /// The directory given.
        path: PathBuf,
        /// What git said.
        detail: String,
    },
    /// `git` could not be started.
    #[error("cannot run git; install git and put it on PATH")]
    GitNotRunnable {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A git command failed.
    #[error("git {command} failed: {message}")]
    Git {
        /// The arguments.
        command: String,
        /// The first line git printed.
        message: String,
    },
    /// A revision names no commit.
    #[error("{what} `{rev}` does not name a commit in this repository; {hint}")]
    UnknownRevision {
        /// "base" or "head".
        what: &'static str,
        /// The revision given.
        rev: String,
        /// What to do.
        hint: String,
    },
    /// A shallow clone does not reach the base.
    #[error(
        "this clone is shallow and its history does not reach a base ({detail}); fetch more history (git fetch --deepen=50, or --unshallow), or pass --all-on-missing-base to mark every component changed"
    )]
    ShallowHistory {
        /// Which base was missing.
        detail: String,
    },
    /// The config is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What the caller knows about the base before asking git.
#[derive(Debug, Clone, Default)]
pub struct BaseRequest {
    /// `--base`: used as is, or an error when it names no commit.
    pub explicit: Option<String>,
    /// The commit of the last successful run, from the status store.
    pub last_success: Option<String>,
    /// Mark every component changed, with the reason, instead of failing when a shallow clone lacks the base.
    pub all_on_missing_base: bool,
    /// Mark every component changed for this reason, unless `explicit` names a base: the
    /// environment the last successful run deployed to no longer holds its deploys (the
    /// embedded emulator was replaced), so nothing can be skipped as already deployed.
    pub everything: Option<String>,
}

/// The base chosen for a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// Diff from this commit (or the empty tree).
    Commit {
        /// Its full id.
        id: String,
        /// Why it was chosen.
        reason: String,
    },
    /// No base reachable: every component counts as changed.
    Everything {
        /// Why.
        reason: String,
    },
}

/// The outcome: what changed and what follows from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffReport {
    /// The base commit (the empty tree's id for a first commit), or `null` when there was none.
    pub base: Option<String>,
    /// Why that base.
    pub base_reason: String,
    /// The head commit.
    pub head: String,
    /// Whether uncommitted and untracked changes were included.
    pub worktree: bool,
    /// Changed paths.
    pub files: Vec<FileChange>,
    /// Changed paths that matched `[diff] global_inputs`: each marks every component changed.
    pub global_inputs_changed: Vec<String>,
    /// Changed paths no component owns (matched by none of the `paths`, or left out by each
    /// owner's `exclude`), global inputs apart: they mark nothing, which may be a gap in the catalogue.
    #[serde(default)]
    pub unowned: Vec<String>,
    /// Every configured component, changed or not.
    pub components: BTreeMap<String, ComponentChange>,
    /// `NAME_tests_required` and `NAME_deploy_required` for each component.
    pub flags: BTreeMap<String, bool>,
}

/// How one component is affected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentChange {
    /// Whether it must be tested, built and deployed again.
    pub changed: bool,
    /// The steps the change requires of it: each of `build`, `test` and `deploy` it has a
    /// command for, when it changed. The gate refuses a run where one of them never ran.
    #[serde(default)]
    pub steps: Vec<run_state::Step>,
    /// Its own changed files.
    pub files: Vec<String>,
    /// Changed components it depends on, directly or not.
    pub because_of: Vec<String>,
}

impl DiffReport {
    /// One line: the base, why, and what changed.
    pub fn summary(&self) -> String {
        let base = self.base.as_deref().map_or("none", |b| &b[..b.len().min(12)]);
        let changed: Vec<&str> = self.changed().collect();
        let changed = if changed.is_empty() { "none".to_string() } else { changed.join(", ") };
        format!("base {base} ({}); changed: {changed}", self.base_reason)
    }

    /// Names of the changed components, sorted.
    pub fn changed(&self) -> impl Iterator<Item = &str> {
        self.components.iter().filter(|(_, c)| c.changed).map(|(n, _)| n.as_str())
    }
}

/// Head resolved and the base chosen for it, usually from one git call.
#[derive(Debug)]
pub struct Resolution {
    /// Head's full commit id.
    pub head: String,
    /// The base, or why none can be trusted (a shallow clone that does not reach it).
    pub base: Result<Base, Error>,
}

/// Chooses the base for `head` (a full commit id), in the documented order.
pub fn choose_base(repo: &Repo, components: &Components, request: &BaseRequest, head: &str) -> Result<Base, Error> {
    resolve(repo, components, request, head)?.base
}

/// Resolves `head` and chooses its base, in the documented order: one `git rev-parse` answers
/// every question at once (head, the shallow flag, the explicit base or the last successful
/// commit and its merge-base with head, the default branch's tips and merge-bases, head's
/// first parent). Fails only when head names no commit or git cannot run.
///
/// A fallback is taken only when it is proven: in a shallow clone, a missing base, a last
/// successful commit that is missing or not reachable, or a default branch with no merge-base
/// in the fetched history is [`Error::ShallowHistory`] (or everything, with
/// [`BaseRequest::all_on_missing_base`]), never a quieter base.
pub fn resolve(repo: &Repo, components: &Components, request: &BaseRequest, head: &str) -> Result<Resolution, Error> {
    let unknown_head = || Error::UnknownRevision {
        what: "head",
        rev: head.to_string(),
        hint: "check the name; a repository with no commits has no head yet".into(),
    };
    if !plain_revision(head) {
        return Err(unknown_head());
    }
    let branch = components.default_branch();
    let candidates = [
        (format!("origin/{branch}"), format!("refs/remotes/origin/{branch}")),
        (branch.to_string(), format!("refs/heads/{branch}")),
    ];
    // Queries: [explicit] or [last?, parent, branch refs…]; a missing one costs a call for those after it,
    // so the ref most likely missing goes last.
    let mut queries = Vec::new();
    let mut ask = |query: String| {
        queries.push(query);
        queries.len() - 1
    };
    let explicit =
        request.explicit.as_ref().map(|rev| (rev, plain_revision(rev).then(|| ask(format!("{rev}^{{commit}}")))));
    let mut last = None;
    let mut parent = None;
    let mut tips = [None, None];
    if explicit.is_none() {
        last = request.last_success.as_ref().map(|id| (id, plain_revision(id).then(|| ask(format!("{id}...{head}")))));
        parent = Some(ask(format!("{head}^1")));
        let order = if repo.probably_has_ref(&candidates[0].1) { [0, 1] } else { [1, 0] };
        for i in order {
            tips[i] = Some(ask(format!("{}...{head}", candidates[i].1)));
        }
    }
    let Some(resolved) = repo.resolve(head, &queries)? else { return Err(unknown_head()) };
    let answer = |index: Option<usize>| index.and_then(|i| resolved.answers[i].clone());
    let asked = Asked {
        explicit: explicit.map(|(rev, i)| (rev.as_str(), answer(i))),
        last: last.map(|(id, i)| (id.as_str(), answer(i))),
        parent: answer(parent).and_then(|ids| ids.into_iter().next()),
        tips: [answer(tips[0]), answer(tips[1])],
    };
    let base = pick_base(&resolved, request, asked, &candidates);
    let head_id = resolved.head;
    Ok(Resolution { head: head_id, base })
}

/// A revision given as an argument: not an option, not a range.
fn plain_revision(rev: &str) -> bool {
    !rev.is_empty() && !rev.starts_with('-') && !rev.starts_with('^') && !rev.contains("..")
}

/// What [`resolve`] asked git, with its answers (`None`: names nothing here).
struct Asked<'a> {
    explicit: Option<(&'a str, Option<Vec<String>>)>,
    last: Option<(&'a str, Option<Vec<String>>)>,
    parent: Option<String>,
    /// `REF...HEAD` for `origin/BRANCH` and `BRANCH`.
    tips: [Option<Vec<String>>; 2],
}

fn pick_base(
    resolved: &git::Resolved,
    request: &BaseRequest,
    asked: Asked<'_>,
    candidates: &[(String, String); 2],
) -> Result<Base, Error> {
    let head = resolved.head.as_str();
    if let Some((rev, answer)) = asked.explicit {
        return explicit_base(resolved, request, rev, answer);
    }

    if let Some(reason) = &request.everything {
        return Ok(Base::Everything { reason: reason.clone() });
    }
    let mut skipped = Vec::new();
    if let Some((last, answer)) = asked.last
        && let Some(base) = last_success_base(resolved, request, last, answer, &mut skipped)
    {
        return base;
    }
    let mut unproven = Vec::new();
    let mut any_branch = false;
    for ((name, _), answer) in candidates.iter().zip(asked.tips) {
        // `REF...HEAD` prints head, the tip, then `^` and each merge-base.
        let Some(ids) = answer else { continue };
        any_branch = true;
        match ids.get(2).and_then(|id| id.strip_prefix('^')) {
            // On the default branch itself the merge-base is head: fall through to its parent.
            Some(id) if id == head => {}
            Some(id) => {
                let reason = explain(&skipped, format!("merge-base with {name}"));
                return Ok(Base::Commit { id: id.to_string(), reason });
            }
            None if resolved.shallow => unproven.push(name.as_str()),
            None => skipped.push(format!("{name} shares no history with head")),
        }
    }
    if !unproven.is_empty() {
        return missing_base(request, format!("no merge-base with {} in the fetched history", unproven.join(" or ")));
    }
    if let Some(id) = asked.parent {
        let reason = if any_branch {
            "first parent of head".to_string()
        } else {
            format!(
                "first parent of head (no {} or {} here to take a merge-base with)",
                candidates[0].0, candidates[1].0
            )
        };
        return Ok(Base::Commit { id, reason: explain(&skipped, reason) });
    }
    if resolved.shallow {
        return missing_base(request, explain(&skipped, "head's parent is not in the fetched history".into()));
    }
    Ok(Base::Commit {
        id: resolved.empty_tree.clone(),
        reason: explain(&skipped, "head is the first commit: diffing against the empty tree".into()),
    })
}

/// `--base REV`: its commit, or why there is none.
fn explicit_base(
    resolved: &git::Resolved,
    request: &BaseRequest,
    rev: &str,
    answer: Option<Vec<String>>,
) -> Result<Base, Error> {
    match answer.filter(|ids| ids.len() == 1 && git::is_object_id(&ids[0])) {
        Some(ids) => Ok(Base::Commit { id: ids[0].clone(), reason: format!("--base {rev}") }),
        None if resolved.shallow && plain_revision(rev) => {
            missing_base(request, format!("--base {rev} is not in the fetched history"))
        }
        None => Err(Error::UnknownRevision {
            what: "base",
            rev: rev.to_string(),
            hint: "check the name, or fetch the branch or tag it is on".into(),
        }),
    }
}

/// The last successful commit as the base while it is an ancestor of head; `None` (and why,
/// in `skipped`) when the next fallback may be taken.
fn last_success_base(
    resolved: &git::Resolved,
    request: &BaseRequest,
    last: &str,
    answer: Option<Vec<String>>,
    skipped: &mut Vec<String>,
) -> Option<Result<Base, Error>> {
    let short = &last[..last.len().min(12)];
    // `LAST...HEAD` prints head, last, then `^` and each merge-base: last is an ancestor
    // of head exactly when it is their only merge-base.
    match answer {
        Some(ids) if ids.len() == 3 && ids[2].strip_prefix('^') == Some(ids[1].as_str()) => {
            return Some(Ok(Base::Commit { id: ids[1].clone(), reason: "commit of the last successful run".into() }));
        }
        Some(_) if resolved.shallow => {
            return Some(missing_base(
                request,
                format!("last successful commit {short} is not reachable from head in the fetched history"),
            ));
        }
        Some(_) => skipped.push(format!(
            "last successful commit {short} is not an ancestor of head (another branch, or history rewritten)"
        )),
        None if resolved.shallow => {
            return Some(missing_base(
                request,
                format!("last successful commit {short} is not in the fetched history"),
            ));
        }
        None => skipped.push(format!("last successful commit {short} no longer exists (history rewritten)")),
    }
    None
}

/// A reason followed by the fallbacks passed over on the way.
fn explain(skipped: &[String], reason: String) -> String {
    if skipped.is_empty() { reason } else { format!("{reason}; {}", skipped.join("; ")) }
}

fn missing_base(request: &BaseRequest, detail: String) -> Result<Base, Error> {
    if request.all_on_missing_base {
        Ok(Base::Everything {
            reason: format!("shallow clone, {detail}: every component marked changed (--all-on-missing-base)"),
        })
    } else {
        Err(Error::ShallowHistory { detail })
    }
}

/// Resolves head, chooses the base and maps the changed paths to components.
///
/// With `worktree`, uncommitted and untracked changes count too. One git call to resolve;
/// the diff between two commits is read in process (two more git calls with `worktree`:
/// the work tree's diff and its untracked files); with an explicit base and head both given
/// as full commit ids, no git call at all.
pub fn diff(
    repo: &Repo,
    components: &Components,
    request: &BaseRequest,
    head: &str,
    worktree: bool,
) -> Result<DiffReport, Error> {
    if let Some(base) = &request.explicit
        && !worktree
        && git::is_object_id(base)
        && git::is_object_id(head)
    {
        // Nothing to resolve; when git refuses either id, the full path below says why.
        if let Ok(files) = repo.diff(&format!("{base}^{{commit}}"), &format!("{head}^{{commit}}")) {
            let mut report = affected(components, files);
            report.base = Some(base.clone());
            report.base_reason = format!("--base {base}");
            report.head = head.to_string();
            return Ok(report);
        }
    }
    let resolution = resolve(repo, components, request, head)?;
    diff_from(repo, components, resolution.head, resolution.base?, worktree)
}

/// The report for `head` (a full commit id) against a base already chosen.
pub fn diff_from(
    repo: &Repo,
    components: &Components,
    head: String,
    base: Base,
    worktree: bool,
) -> Result<DiffReport, Error> {
    match base {
        Base::Commit { id, reason } => {
            let files = if worktree { repo.diff_worktree(&id)? } else { repo.diff(&id, &head)? };
            let mut report = affected(components, files);
            report.base = Some(id);
            report.base_reason = reason;
            report.head = head;
            report.worktree = worktree;
            Ok(report)
        }
        Base::Everything { reason } => Ok(everything(components, head, reason)),
    }
}

/// The report for a pair of known commit ids, with no base resolution: the hot path of `bench diff`.
pub fn diff_commits(repo: &Repo, components: &Components, base: &str, head: &str) -> Result<DiffReport, Error> {
    let mut report = affected(components, repo.diff(base, head)?);
    report.base = Some(base.to_string());
    report.base_reason = "given".into();
    report.head = head.to_string();
    Ok(report)
}

/// Maps changed paths to components: pure, no I/O.
pub fn affected(components: &Components, files: Vec<FileChange>) -> DiffReport {
    let Owned { mut own_files, global_inputs_changed, unowned } = owners(components, &files);
    let all = !global_inputs_changed.is_empty();
    let because_of = dependents_of_changed(components, &own_files);
    let mut report_components = BTreeMap::new();
    let mut flags = BTreeMap::new();
    for (i, component) in components.components.iter().enumerate() {
        let changed = all || !own_files[i].is_empty() || !because_of[i].is_empty();
        insert_flags(&mut flags, component, changed);
        report_components.insert(
            component.name.clone(),
            ComponentChange {
                changed,
                steps: if changed { component.steps() } else { Vec::new() },
                files: std::mem::take(&mut own_files[i]),
                because_of: because_of[i].iter().map(|s| s.to_string()).collect(),
            },
        );
    }
    DiffReport {
        base: None,
        base_reason: String::new(),
        head: String::new(),
        worktree: false,
        files,
        global_inputs_changed,
        unowned,
        components: report_components,
        flags,
    }
}

/// Who owns the changed paths.
struct Owned {
    /// Per component (catalogue order), its own changed files.
    own_files: Vec<Vec<String>>,
    /// Changed paths that are global inputs.
    global_inputs_changed: Vec<String>,
    /// Changed paths no component owns, global inputs apart.
    unowned: Vec<String>,
}

/// Each changed path to the components whose `paths` match it and whose `exclude` does not.
fn owners(components: &Components, files: &[FileChange]) -> Owned {
    let mut own_files: Vec<Vec<String>> = vec![Vec::new(); components.components.len()];
    let mut global_inputs_changed = Vec::new();
    let mut owners = Vec::new();
    let mut excluded = Vec::new();
    let mut unowned = Vec::new();
    for file in files {
        if components.global_inputs.is_match(&file.path) {
            global_inputs_changed.push(file.path.clone());
        }
        components.includes.matches_into(&file.path, &mut owners);
        let mut owned = false;
        if !owners.is_empty() {
            components.excludes.matches_into(&file.path, &mut excluded);
            let excluded: BTreeSet<usize> = excluded.iter().map(|&g| components.exclude_owner[g]).collect();
            let mut last = usize::MAX;
            for &glob in &owners {
                let owner = components.include_owner[glob];
                // Globs of one component are added together, so repeats are adjacent.
                if owner != last && !excluded.contains(&owner) {
                    own_files[owner].push(file.path.clone());
                    owned = true;
                }
                last = owner;
            }
        }
        if !owned && global_inputs_changed.last() != Some(&file.path) {
            unowned.push(file.path.clone());
        }
    }
    for list in &mut own_files {
        list.dedup();
    }
    Owned { own_files, global_inputs_changed, unowned }
}

/// Per component, the changed components it depends on, directly or not.
///
/// Each changed component's dependents are found by a walk from it alone: the catalogue keeps
/// only direct dependents, so a long chain costs memory in its length.
fn dependents_of_changed<'a>(components: &'a Components, own_files: &[Vec<String>]) -> Vec<BTreeSet<&'a str>> {
    let count = components.components.len();
    let mut because_of: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); count];
    let mut seen = vec![usize::MAX; count];
    let mut todo: Vec<usize> = Vec::new();
    for (i, list) in own_files.iter().enumerate() {
        if list.is_empty() {
            continue;
        }
        todo.extend(&components.dependents[i]);
        while let Some(dependent) = todo.pop() {
            if seen[dependent] != i {
                seen[dependent] = i;
                because_of[dependent].insert(&components.components[i].name);
                todo.extend(&components.dependents[dependent]);
            }
        }
    }
    because_of
}

fn everything(components: &Components, head: String, reason: String) -> DiffReport {
    let mut flags = BTreeMap::new();
    let report_components = components
        .iter()
        .map(|component| {
            insert_flags(&mut flags, component, true);
            (component.name.clone(), ComponentChange { changed: true, steps: component.steps(), ..Default::default() })
        })
        .collect();
    DiffReport {
        base: None,
        base_reason: reason,
        head,
        worktree: false,
        files: Vec::new(),
        global_inputs_changed: Vec::new(),
        unowned: Vec::new(),
        components: report_components,
        flags,
    }
}

/// A component's tests are required when it changed and has a test command;
/// its deploy is required whenever it changed (the deploy stage decides what deploying means for it).
fn insert_flags(flags: &mut BTreeMap<String, bool>, component: &Component, changed: bool) {
    flags.insert(format!("{}_tests_required", component.flag_prefix), changed && component.test.is_some());
    flags.insert(format!("{}_deploy_required", component.flag_prefix), changed);
}
