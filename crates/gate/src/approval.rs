//! Approval records: the `approval` step of a run, under component [`PIPELINE`].
//!
//! [`request`] records it waiting (`pending`, with what production will receive), [`approve`]
//! records it passed and [`refuse`] failed, each with who decided ([`run_state::Details::by`]),
//! when (the record's end time) and an optional comment (the note). [`state`] reads it back
//! as a typed [`ApprovalState`]; a promoted environment's deploy
//! ([`crate::decide_deploy`]) is refused unless it is [`ApprovalState::Approved`].
//!
//! ```
//! use run_state::{FileStore, Store};
//! use gate::approval::{self, ApprovalState};
//!
//! let dir = tempfile::tempdir()?;
//! let store = FileStore::open(dir.path())?;
//! approval::request(&store, "run-1", "abc123", "prod receives: stack master, functions api-handler")?;
//! assert!(matches!(approval::state(&store.run("run-1")?), ApprovalState::Waiting { .. }));
//! approval::approve(&store, "run-1", "alice", Some("looks good"))?;
//! match approval::state(&store.run("run-1")?) {
//!     ApprovalState::Approved { by, comment, .. } => {
//!         assert_eq!(by, "alice");
//!         assert_eq!(comment.as_deref(), Some("looks good"));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::SystemTime;

use run_state::{PIPELINE, ReleaseDigest, Status, Step, StepRecord, Store};

/// The longest approver name or comment kept (longer ones are refused).
pub const MAX_TEXT: usize = 500;

/// Mistakes in an approval, each naming the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store.
    #[error(transparent)]
    State(#[from] run_state::Error),
    /// The run has no records: nothing to approve.
    #[error("run `{run_id}` has no records; pass the run id of a run that exists (--run)")]
    UnknownRun {
        /// The run.
        run_id: String,
    },
    /// An empty or over-long name, or one with a line break.
    #[error("{what}: must be one line of 1 to {MAX_TEXT} characters; fix {flag}")]
    BadText {
        /// What it is.
        what: &'static str,
        /// The flag that gave it.
        flag: &'static str,
    },
    /// The approval was already decided.
    #[error(
        "run `{run_id}`'s approval was already {} by {by}; start a new run to ask again",
        if *status == Status::Passed { "given" } else { "refused" }
    )]
    AlreadyDecided {
        /// The run.
        run_id: String,
        /// Passed or failed.
        status: Status,
        /// Who decided.
        by: String,
    },
}

/// Where a run's approval is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalState {
    /// No approval was asked for or given.
    NotRequested,
    /// Asked for, not decided.
    Waiting {
        /// What production will receive, as recorded with the request.
        summary: Option<String>,
        /// When it was asked for.
        since: Option<SystemTime>,
    },
    /// Recorded passed, but naming no approver (not written by [`approve`], which needs one):
    /// no approval.
    Unnamed,
    /// Approved.
    Approved {
        /// Who.
        by: String,
        /// When.
        at: Option<SystemTime>,
        /// Their comment.
        comment: Option<String>,
    },
    /// Refused: production is refused for this run.
    Refused {
        /// Who.
        by: String,
        /// When.
        at: Option<SystemTime>,
        /// Their comment.
        comment: Option<String>,
    },
}

/// The approval state of a run, from its records (pure).
pub fn state(records: &[StepRecord]) -> ApprovalState {
    let Some(record) = records.iter().find(|r| r.component == PIPELINE && r.step == Step::Approval) else {
        return ApprovalState::NotRequested;
    };
    let named = record.details.by.as_deref().filter(|by| !by.trim().is_empty()).cloned();
    let by = named.clone().unwrap_or_else(|| "someone unnamed".to_string());
    match record.status {
        Status::Passed if named.is_none() => ApprovalState::Unnamed,
        Status::Passed => ApprovalState::Approved { by, at: record.ended_at, comment: record.details.note.clone() },
        Status::Failed | Status::Cancelled => {
            ApprovalState::Refused { by, at: record.ended_at, comment: record.details.note.clone() }
        }
        Status::Pending | Status::Running | Status::Skipped => {
            ApprovalState::Waiting { summary: record.details.note.clone(), since: record.started_at }
        }
    }
}

fn check_text(text: &str, what: &'static str, flag: &'static str) -> Result<(), Error> {
    if text.trim().is_empty() || text.chars().count() > MAX_TEXT || text.contains(['\n', '\r']) {
        return Err(Error::BadText { what, flag });
    }
    Ok(())
}

/// Records that the run waits for approval (`approval` pending), with `summary`: what
/// production will receive. Refused when the approval was already decided.
pub fn request(store: &dyn Store, run_id: &str, commit: &str, summary: &str) -> Result<StepRecord, Error> {
    request_covering(store, run_id, commit, summary, None)
}

/// [`request`] with the digest of what production will receive, as the approver is shown it:
/// an approval given later covers exactly that ([`approve`] carries it over). Each deploying
/// stage may add its own parts (the stacks, the site): a request already waiting keeps the
/// parts and the summary it has, and takes these beside them.
pub fn request_covering(
    store: &dyn Store,
    run_id: &str,
    commit: &str,
    summary: &str,
    digest: Option<ReleaseDigest>,
) -> Result<StepRecord, Error> {
    run_state::check_name("run id", run_id)?;
    let records = store.run(run_id)?;
    undecided(run_id, &records)?;
    let waiting =
        records.iter().find(|r| r.component == PIPELINE && r.step == Step::Approval && r.status == Status::Pending);
    let mut record = StepRecord::new(run_id, commit, PIPELINE, Step::Approval, Status::Pending);
    record.started_at = waiting.and_then(|r| r.started_at).or(Some(SystemTime::now()));
    record.details.note = match waiting.and_then(|r| r.details.note.as_deref()) {
        Some(earlier) if earlier != summary && !earlier.split("; ").any(|part| part == summary) => {
            Some(format!("{earlier}; {summary}"))
        }
        Some(earlier) => Some(earlier.to_string()),
        None => Some(summary.to_string()),
    };
    let mut parts = waiting.and_then(|r| r.details.digest.as_deref().cloned()).unwrap_or_default();
    if let Some(digest) = digest {
        parts.extend(digest);
    }
    record.details.digest = (!parts.is_empty()).then(|| Box::new(parts));
    store.record(&record)?;
    Ok(record)
}

/// What a given approval covers, part by part, when the approver was shown it (pure): the
/// digest of the run's passed, named approval.
pub fn digest(records: &[StepRecord]) -> Option<ReleaseDigest> {
    let record = records.iter().find(|r| r.component == PIPELINE && r.step == Step::Approval)?;
    let named = record.details.by.as_deref().is_some_and(|by| !by.trim().is_empty());
    (record.status == Status::Passed && named).then(|| record.details.digest.as_deref().cloned()).flatten()
}

/// [`approve`] covering `digest` (what the approver was shown), in place of any digest the
/// request carried.
pub fn approve_covering(
    store: &dyn Store,
    run_id: &str,
    by: &str,
    comment: Option<&str>,
    digest: ReleaseDigest,
) -> Result<StepRecord, Error> {
    decide(store, run_id, by, comment, Status::Passed, Some(digest))
}

/// Records the run approved by `by`, with an optional comment. The same approval by the same
/// person again returns the first record unchanged; any other change of a decided approval is
/// [`Error::AlreadyDecided`].
pub fn approve(store: &dyn Store, run_id: &str, by: &str, comment: Option<&str>) -> Result<StepRecord, Error> {
    decide(store, run_id, by, comment, Status::Passed, None)
}

/// Records the run's approval refused by `by` (the step fails; production is then refused).
pub fn refuse(store: &dyn Store, run_id: &str, by: &str, comment: Option<&str>) -> Result<StepRecord, Error> {
    decide(store, run_id, by, comment, Status::Failed, None)
}

fn undecided(run_id: &str, records: &[StepRecord]) -> Result<(), Error> {
    match state(records) {
        ApprovalState::Approved { by, .. } => {
            Err(Error::AlreadyDecided { run_id: run_id.to_string(), status: Status::Passed, by })
        }
        ApprovalState::Refused { by, .. } => {
            Err(Error::AlreadyDecided { run_id: run_id.to_string(), status: Status::Failed, by })
        }
        _ => Ok(()),
    }
}

fn decide(
    store: &dyn Store,
    run_id: &str,
    by: &str,
    comment: Option<&str>,
    status: Status,
    digest: Option<ReleaseDigest>,
) -> Result<StepRecord, Error> {
    run_state::check_name("run id", run_id)?;
    check_text(by, "the approver's name", "--by")?;
    if let Some(comment) = comment {
        check_text(comment, "the comment", "--comment")?;
    }
    let records = store.run(run_id)?;
    let Some(first) = records.first() else { return Err(Error::UnknownRun { run_id: run_id.to_string() }) };
    // The same decision by the same person again (a retried CodeBuild action) is no change.
    if let Some(decided) = records.iter().find(|r| r.component == PIPELINE && r.step == Step::Approval)
        && decided.status == status
        && decided.details.by.as_deref().is_some_and(|b| b == by)
    {
        return Ok(decided.clone());
    }
    undecided(run_id, &records)?;
    let requested = records.iter().find(|r| r.component == PIPELINE && r.step == Step::Approval);
    let mut record = StepRecord::new(run_id, &first.commit, PIPELINE, Step::Approval, status);
    let now = SystemTime::now();
    record.started_at = requested.and_then(|r| r.started_at).or(Some(now));
    record.ended_at = Some(now);
    record.details.by = Some(Box::new(by.to_string()));
    record.details.note = comment.map(str::to_string);
    // What the approver was shown: given now, else what the request carried.
    record.details.digest = digest.map(Box::new).or_else(|| requested.and_then(|r| r.details.digest.clone()));
    if status == Status::Failed {
        record.details.error = Some(format!("refused by {by}"));
    }
    store.record(&record)?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use run_state::FileStore;

    fn store_with_run() -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.record(&StepRecord::new("r1", "abc", PIPELINE, Step::Diff, Status::Passed)).unwrap();
        (dir, store)
    }

    #[test]
    fn a_refusal_is_recorded_failed_with_who_and_why() {
        let (_dir, store) = store_with_run();
        request(&store, "r1", "abc", "prod receives: master").unwrap();
        refuse(&store, "r1", "bob", Some("not on a Friday")).unwrap();
        let records = store.run("r1").unwrap();
        let record = records.iter().find(|r| r.step == Step::Approval).unwrap();
        assert_eq!(record.status, Status::Failed);
        assert_eq!(record.commit, "abc");
        assert!(
            matches!(state(&records), ApprovalState::Refused { by, comment: Some(c), .. } if by == "bob" && c == "not on a Friday")
        );
    }

    #[test]
    fn a_decided_approval_is_not_decided_again() {
        let (_dir, store) = store_with_run();
        approve(&store, "r1", "alice", None).unwrap();
        let before = store.run("r1").unwrap();
        approve(&store, "r1", "alice", Some("again")).unwrap();
        assert_eq!(store.run("r1").unwrap(), before, "a retry changes nothing");
        let err = refuse(&store, "r1", "mallory", None).unwrap_err();
        assert!(matches!(err, Error::AlreadyDecided { status: Status::Passed, ref by, .. } if by == "alice"), "{err}");
        assert!(matches!(request(&store, "r1", "abc", "again"), Err(Error::AlreadyDecided { .. })));
    }

    #[test]
    fn a_passed_approval_naming_nobody_is_no_approval_and_a_named_one_replaces_it() {
        let (_dir, store) = store_with_run();
        store.record(&StepRecord::new("r1", "abc", PIPELINE, Step::Approval, Status::Passed)).unwrap();
        assert_eq!(state(&store.run("r1").unwrap()), ApprovalState::Unnamed);
        let mut blank = StepRecord::new("r1", "abc", PIPELINE, Step::Approval, Status::Passed);
        blank.details.by = Some(Box::new("  ".into()));
        store.record(&blank).unwrap();
        assert_eq!(state(&store.run("r1").unwrap()), ApprovalState::Unnamed);
        approve(&store, "r1", "alice", None).unwrap();
        assert!(matches!(state(&store.run("r1").unwrap()), ApprovalState::Approved { by, .. } if by == "alice"));
    }

    #[test]
    fn bad_names_and_unknown_runs_are_refused() {
        let (_dir, store) = store_with_run();
        assert!(matches!(approve(&store, "r1", " ", None), Err(Error::BadText { flag: "--by", .. })));
        assert!(matches!(
            approve(&store, "r1", "a", Some("two\nlines")),
            Err(Error::BadText { flag: "--comment", .. })
        ));
        assert!(matches!(approve(&store, "r2", "alice", None), Err(Error::UnknownRun { .. })));
        assert_eq!(state(&store.run("r1").unwrap()), ApprovalState::NotRequested);
    }
}
