//! Pruning the file store: old runs' records dropped, the file rewritten atomically under its
//! exclusive lock, so a year-old store stays small without losing a run it keeps.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, Write};
use std::time::{Duration, SystemTime};

use crate::record::{Step, StepRecord};
use crate::store::{FileStore, Line};
use crate::{Error, write_atomic_with};

/// Which runs a prune removes: those outside the newest `keep_runs`, or whose last record is
/// older than `older_than` (a run matching either goes). At least one must be set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prune {
    /// Keep the newest N runs (by first record).
    pub keep_runs: Option<usize>,
    /// Remove runs whose last record is older than this.
    pub older_than: Option<Duration>,
}

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    /// The runs removed, oldest first.
    pub removed: Vec<String>,
    /// How many runs are kept.
    pub kept: usize,
    /// Runs kept though the rule would remove them, with why (the latest success of an
    /// environment, a step still running).
    pub protected: Vec<(String, String)>,
    /// The store's size before and after, in bytes.
    pub bytes_before: u64,
    /// After.
    pub bytes_after: u64,
}

#[derive(Default)]
struct RunFacts {
    last: Option<SystemTime>,
    /// (step, component) → whether its latest record is unfinished with a live (or unknown) runner.
    open: HashMap<(Step, String), bool>,
}

impl FileStore {
    /// Removes old runs' records (see [`Prune`]) and the history of released locks, keeping
    /// every success mark, every held lock, the run of each environment's latest success and
    /// any run with a step still running. The file is rewritten to a temporary file beside it
    /// and renamed over it while the store's exclusive lock is held, so a crash leaves the old
    /// file or the new one, and a writer waiting on the lock appends to the new one.
    pub fn prune(&self, rule: Prune, now: SystemTime) -> Result<Pruned, Error> {
        let path = self.path().to_path_buf();
        let io = |e| Error::io(&path, e);
        let mut file = OpenOptions::new().read(true).append(true).open(&path).map_err(io)?;
        file.lock().map_err(io)?;
        let bytes_before = file.metadata().map_err(io)?.len();

        let survey = Survey::read(&mut file, &path)?;
        let (mut pruned, removed) = survey.choose(&rule, now);
        pruned.bytes_before = bytes_before;
        let last_lock_line = survey.last_lock_line;

        // Pass 2: the kept lines, byte for byte, into a temporary file renamed over the store.
        file.rewind().map_err(io)?;
        write_atomic_with(&path, |out| {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
            let mut failed = None;
            let result = each_line(&mut file, &path, |number, line, raw| {
                let keep = match &line {
                    Line::Step(record) => !removed.contains(&record.run_id),
                    Line::Success(_) => true,
                    // A held lock's latest line; a released lock's history goes.
                    Line::Lock(lock) => !lock.released && last_lock_line.get(&lock.name) == Some(&number),
                };
                if keep && let Err(e) = out.write_all(raw) {
                    failed = Some(e);
                    return Ok(false);
                }
                Ok(true)
            });
            if let Some(e) = failed {
                return Err(e);
            }
            result.map_err(std::io::Error::other)?;
            out.flush()
        })?;
        pruned.bytes_after = std::fs::metadata(&path).map_err(io)?.len();
        // The lock goes with `file`, the old inode's: writers that waited on it see the path
        // now names another file and open that one.
        drop(file);
        Ok(pruned)
    }
}

/// Pass 1 of a prune: what each run is, the latest success per environment, the latest line
/// per lock.
#[derive(Default)]
struct Survey {
    /// Run ids in the order of their first line.
    order: Vec<String>,
    runs: HashMap<String, RunFacts>,
    latest_success: HashMap<String, String>,
    last_lock_line: HashMap<String, usize>,
}

impl Survey {
    fn read(file: &mut File, path: &std::path::Path) -> Result<Survey, Error> {
        let mut survey = Survey::default();
        each_line(file, path, |number, line, _| {
            match line {
                Line::Step(record) => {
                    let facts = survey.runs.entry(record.run_id.clone()).or_insert_with(|| {
                        survey.order.push(record.run_id.clone());
                        RunFacts::default()
                    });
                    let when = record.ended_at.into_iter().chain(record.started_at).max();
                    facts.last = facts.last.max(when);
                    let open = !record.status.is_final() && still_open(&record);
                    facts.open.insert((record.step, record.component.clone()), open);
                }
                Line::Success(mark) => {
                    survey.latest_success.insert(mark.env.clone(), mark.run_id.clone());
                }
                Line::Lock(lock) => {
                    survey.last_lock_line.insert(lock.name.clone(), number);
                }
            }
            Ok(true)
        })?;
        Ok(survey)
    }

    /// The runs `rule` removes at `now` (pure): an environment's latest success and a run with
    /// a step still running are kept, and said so.
    fn choose(&self, rule: &Prune, now: SystemTime) -> (Pruned, HashSet<String>) {
        let cutoff = rule.older_than.and_then(|age| now.checked_sub(age));
        let first_kept = rule.keep_runs.map(|n| self.order.len().saturating_sub(n));
        let successes: HashSet<&String> = self.latest_success.values().collect();
        let mut pruned = Pruned::default();
        let mut removed: HashSet<String> = HashSet::new();
        for (index, run_id) in self.order.iter().enumerate() {
            let facts = &self.runs[run_id];
            let by_count = first_kept.is_some_and(|first| index < first);
            let by_age = cutoff.is_some_and(|cutoff| facts.last.is_some_and(|last| last < cutoff));
            if !(by_count || by_age) {
                continue;
            }
            if successes.contains(run_id) {
                pruned.protected.push((run_id.clone(), "the latest success of an environment".into()));
            } else if facts.open.values().any(|open| *open) {
                pruned.protected.push((run_id.clone(), "a step is still running".into()));
            } else {
                removed.insert(run_id.clone());
                pruned.removed.push(run_id.clone());
            }
        }
        pruned.kept = self.order.len() - removed.len();
        (pruned, removed)
    }
}

/// Whether an unfinished step may still end: its runner is not provably dead.
fn still_open(record: &StepRecord) -> bool {
    record.runner_died().is_none()
}

/// Calls `each` with every whole line of `file` (its number, parsed, and its bytes); stops at a
/// torn last line, or when `each` says so.
fn each_line(
    file: &mut File,
    path: &std::path::Path,
    mut each: impl FnMut(usize, Line, &[u8]) -> Result<bool, Error>,
) -> Result<(), Error> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buffer = Vec::new();
    let mut number = 0;
    loop {
        buffer.clear();
        if reader.read_until(b'\n', &mut buffer).map_err(|e| Error::io(path, e))? == 0 || !buffer.ends_with(b"\n") {
            return Ok(());
        }
        number += 1;
        let line =
            serde_json::from_slice::<Line>(&buffer).map_err(|e| Error::corrupt(path, format!("line {number}"), e))?;
        if !each(number, line, &buffer)? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;
    use crate::store::Store;

    fn step(store: &FileStore, run: &str, status: Status, at: SystemTime) {
        let mut record = StepRecord::new(run, "abc", "api", Step::Test, status);
        record.started_at = Some(at);
        if status.is_final() {
            record.ended_at = Some(at);
        }
        store.record(&record).unwrap();
    }

    #[test]
    fn a_prune_keeps_the_newest_runs_the_latest_success_held_locks_and_running_steps() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let old = SystemTime::now() - Duration::from_secs(400 * 86400);
        for run in ["r1", "r2", "r3", "r4", "r5"] {
            step(&store, run, Status::Running, old);
            step(&store, run, Status::Passed, old);
        }
        let mut deploy = StepRecord::new("r1", "abc", "api", Step::Deploy, Status::Passed);
        deploy.ended_at = Some(old);
        store.record(&deploy).unwrap();
        store.mark_success("r1", "dev").unwrap();
        // r3 has a step still running, by this (live) process.
        let mut running = StepRecord::new("r3", "abc", "web", Step::Build, Status::Running);
        running.details.set_runner_to_this_process();
        store.record(&running).unwrap();
        let hour = Duration::from_secs(3600);
        store.acquire_lock("deploy/a", "someone", hour).unwrap();
        store.acquire_lock("deploy/b", "someone", hour).unwrap();
        store.release_lock("deploy/b", "someone").unwrap();

        let pruned = store.prune(Prune { keep_runs: Some(2), older_than: None }, SystemTime::now()).unwrap();
        assert_eq!(pruned.removed, ["r2"]);
        assert_eq!(pruned.kept, 4);
        assert_eq!(
            pruned.protected,
            [
                ("r1".to_string(), "the latest success of an environment".to_string()),
                ("r3".to_string(), "a step is still running".to_string())
            ]
        );
        assert!(pruned.bytes_after < pruned.bytes_before);
        assert!(store.run("r2").unwrap().is_empty());
        assert_eq!(store.run("r4").unwrap().len(), 1);
        assert_eq!(store.run("r3").unwrap().len(), 2);
        assert_eq!(store.run_ids().unwrap(), ["r1", "r3", "r4", "r5"]);
        assert_eq!(store.last_success("dev").unwrap().unwrap().run_id, "r1");
        assert!(store.acquire_lock("deploy/a", "another", hour).is_err(), "a held lock is kept");
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains("deploy/b"), "a released lock's history goes:\n{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(store.path()).unwrap().permissions().mode() & 0o777, 0o644);

        // By age: everything older than a year but what is protected.
        store.record(&StepRecord::new("r6", "abc", "api", Step::Test, Status::Passed)).unwrap();
        let pruned = store
            .prune(Prune { keep_runs: None, older_than: Some(Duration::from_secs(365 * 86400)) }, SystemTime::now())
            .unwrap();
        assert_eq!(pruned.removed, ["r4", "r5"]);
        assert_eq!(store.run_ids().unwrap(), ["r1", "r3", "r6"]);
    }

    #[test]
    fn writers_during_a_prune_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let old = SystemTime::now() - Duration::from_secs(400 * 86400);
        for n in 0..200 {
            step(&store, &format!("old-{n}"), Status::Passed, old);
        }
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for n in 0..100 {
                        let record = StepRecord::new("live", "abc", &format!("c{w}-{n}"), Step::Test, Status::Passed);
                        store.record(&record).unwrap();
                    }
                })
            })
            .collect();
        for _ in 0..20 {
            store
                .prune(Prune { keep_runs: None, older_than: Some(Duration::from_secs(86400)) }, SystemTime::now())
                .unwrap();
        }
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(store.run("live").unwrap().len(), 300, "every record written during the prunes is kept");
        assert_eq!(store.run_ids().unwrap(), ["live"]);
    }
}
