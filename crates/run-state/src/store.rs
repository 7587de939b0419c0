//! Where records live: the [`Store`] trait and the embedded [`FileStore`].

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::record::{Status, Step, StepRecord, merge_later};
use crate::{Error, redact};

/// The commit a successful run deployed: the next run's default base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuccessMark {
    /// The run.
    pub run_id: String,
    /// The environment it reached. Marks written before environments were kept have none and
    /// count for [`DEFAULT_SUCCESS_ENV`] (`prod`), so an existing store keeps its base.
    #[serde(default = "default_env")]
    pub env: String,
    /// Its commit.
    pub commit: String,
    /// When it was marked.
    #[serde(with = "crate::record::time_opt")]
    pub at: Option<SystemTime>,
}

/// The environment a success mark without one counts for, and the default diff base.
pub const DEFAULT_SUCCESS_ENV: &str = "prod";

fn default_env() -> String {
    DEFAULT_SUCCESS_ENV.into()
}

/// A place that keeps step records. Implementations must not lose a record
/// when several processes write at once.
pub trait Store: crate::release::ReleaseStore + Send + Sync {
    /// Records the state of a step, replacing the earlier state of the same run, component and
    /// step unless that one is a result and this one is weaker ([`crate::supersede`]: a skip or
    /// a rerun never replaces a passed, failed or cancelled step).
    fn record(&self, record: &StepRecord) -> Result<(), Error>;

    /// The latest state of every step of a run, in pipeline order. A pending or running step
    /// whose runner process died reads as failed (`runner died (pid N on HOST)`, see
    /// [`StepRecord::runner_died`]): it will never end, and the gate must not wait for it.
    fn run(&self, run_id: &str) -> Result<Vec<StepRecord>, Error>;

    /// Every run id, oldest first.
    fn run_ids(&self) -> Result<Vec<String>, Error>;

    /// Hands every run with the latest state of its steps (as [`Store::run`] reads them) to
    /// `each`, oldest first, one run at a time: what [`Store::runs`] returns without holding
    /// every run, so a reader of a year-old store keeps only what it takes from each run.
    /// `each` stops the visit with [`ControlFlow::Break`]. A store that cannot be read ends the
    /// visit with the error, possibly after earlier runs were handed over.
    fn for_each_run(&self, each: &mut dyn FnMut(&str, Vec<StepRecord>) -> ControlFlow<()>) -> Result<(), Error> {
        for id in self.run_ids()? {
            let records = self.run(&id)?;
            if each(&id, records).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Every run with the latest state of its steps, oldest first (all in memory: a reader
    /// that needs one run at a time visits them with [`Store::for_each_run`]).
    fn runs(&self) -> Result<Vec<(String, Vec<StepRecord>)>, Error> {
        let mut all = Vec::new();
        self.for_each_run(&mut |id, records| {
            all.push((id.to_string(), records));
            ControlFlow::Continue(())
        })?;
        Ok(all)
    }

    /// Records that `run_id` deployed its commit to `env`, whose deploy is recorded as `deploy`
    /// ([`Store::mark_success_for`] with [`Step::Deploy`]). A promoted environment's mark goes
    /// through [`Store::mark_success_for`] with its step (`prod-deploy`).
    fn mark_success(&self, run_id: &str, env: &str) -> Result<SuccessMark, Error> {
        self.mark_success_for(run_id, env, Step::Deploy)
    }

    /// Records that `run_id` deployed its commit to `env`, whose deploy is recorded as
    /// `deploy_step` (`deploy`, or `prod-deploy` for a promoted environment); the last success
    /// of the environment `[diff] base_environment` names is the next default base. Refused
    /// ([`check_success`]) unless `deploy_step` passed, nothing failed or is still running, and,
    /// for `prod-deploy`, every component whose `deploy` passed also passed `prod-deploy`.
    fn mark_success_for(&self, run_id: &str, env: &str, deploy_step: Step) -> Result<SuccessMark, Error>;

    /// The last commit marked successful for `env`.
    fn last_success(&self, env: &str) -> Result<Option<SuccessMark>, Error>;

    /// Takes the lock `name` for `holder` (a deploy of one stack, say) for at most `ttl`.
    /// Refused with [`Error::Locked`] (naming the holder and since when) while another holder
    /// has it; a lock older than its ttl is stale and taken over. Taking a lock one already
    /// holds renews it.
    fn acquire_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<(), Error>;

    /// Gives the lock back; a lock held by someone else (taken over when stale) is left alone.
    fn release_lock(&self, name: &str, holder: &str) -> Result<(), Error>;
}

impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn record(&self, record: &StepRecord) -> Result<(), Error> {
        (**self).record(record)
    }
    fn run(&self, run_id: &str) -> Result<Vec<StepRecord>, Error> {
        (**self).run(run_id)
    }
    fn run_ids(&self) -> Result<Vec<String>, Error> {
        (**self).run_ids()
    }
    fn for_each_run(&self, each: &mut dyn FnMut(&str, Vec<StepRecord>) -> ControlFlow<()>) -> Result<(), Error> {
        (**self).for_each_run(each)
    }
    fn runs(&self) -> Result<Vec<(String, Vec<StepRecord>)>, Error> {
        (**self).runs()
    }
    fn mark_success(&self, run_id: &str, env: &str) -> Result<SuccessMark, Error> {
        (**self).mark_success(run_id, env)
    }
    fn mark_success_for(&self, run_id: &str, env: &str, deploy_step: Step) -> Result<SuccessMark, Error> {
        (**self).mark_success_for(run_id, env, deploy_step)
    }
    fn last_success(&self, env: &str) -> Result<Option<SuccessMark>, Error> {
        (**self).last_success(env)
    }
    fn acquire_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<(), Error> {
        (**self).acquire_lock(name, holder, ttl)
    }
    fn release_lock(&self, name: &str, holder: &str) -> Result<(), Error> {
        (**self).release_lock(name, holder)
    }
}

/// A lock as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// What is locked (`deploy/us-east-1/app-dev`).
    pub name: String,
    /// Who holds it (a run and a process).
    pub holder: String,
    /// Since when.
    #[serde(with = "crate::record::time_opt")]
    pub since: Option<SystemTime>,
    /// How long it holds, in seconds.
    pub ttl_secs: u64,
    /// Whether this line gives the lock back.
    #[serde(default)]
    pub released: bool,
    /// The process that took it (`HOST:PID`, as [`crate::Details::runner`]), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// Which process exactly (`NAMESPACE/START`, as [`crate::Details::runner_process`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_identity: Option<String>,
}

impl LockRecord {
    /// Stale: past its ttl, or its process provably gone ([`crate::process_died`]: on this
    /// host, in this pid namespace, the pid free or another process), so nobody will release it.
    fn stale(&self, now: SystemTime) -> bool {
        self.since
            .is_none_or(|since| now.duration_since(since).unwrap_or_default() > Duration::from_secs(self.ttl_secs))
            || self.holder_died().is_some()
    }

    /// `runner died (pid N on HOST)` when the process that took the lock is provably gone.
    pub fn holder_died(&self) -> Option<String> {
        crate::process_died(self.process.as_deref()?, self.process_identity.as_deref()?)
    }
}

/// One line of the store file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Line {
    Step(StepRecord),
    Success(SuccessMark),
    Lock(LockRecord),
}

/// The embedded default: an append-only JSON-lines file under the monorepo's
/// `.pipeline/`, written under an exclusive file lock.
///
/// Appending whole lines under a lock means concurrent processes never
/// interleave or lose a record, and a crash mid-write can only leave a torn
/// last line, which readers skip.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// The file name inside the store folder.
    pub const FILE_NAME: &'static str = "state.jsonl";

    /// Opens (creating if needed) the store in `dir`, usually `<monorepo>/.pipeline`.
    pub fn open(dir: &Path) -> Result<FileStore, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(Self::FILE_NAME);
        OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        Ok(FileStore { path })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the line `make` returns, under an exclusive lock held while
    /// `make` reads the file (when it needs to check something first).
    fn append_with(&self, make: impl FnOnce(&File) -> Result<Line, Error>) -> Result<Line, Error> {
        let mut file = self.open_locked()?;
        repair_tail(&mut file).map_err(|e| Error::io(&self.path, e))?;
        file.rewind().map_err(|e| Error::io(&self.path, e))?;
        let line = make(&file)?;
        let mut bytes = serde_json::to_vec(&line)
            .map_err(|e| Error::corrupt(&self.path, "a record that cannot be written as JSON", e))?;
        bytes.push(b'\n');
        // One write of the whole line under the lock: readers see all of it or none.
        file.write_all(&bytes).map_err(|e| Error::io(&self.path, e))?;
        file.sync_data().map_err(|e| Error::io(&self.path, e))?;
        Ok(line)
    }

    /// The store file opened for appending, under its exclusive lock. A prune renames a new
    /// file over the path while holding the lock: a lock taken on the file it replaced is let
    /// go and the new one opened, so no line lands in a file nobody reads.
    fn open_locked(&self) -> Result<File, Error> {
        use std::os::unix::fs::MetadataExt;
        loop {
            let file =
                OpenOptions::new().append(true).read(true).open(&self.path).map_err(|e| Error::io(&self.path, e))?;
            file.lock().map_err(|e| Error::io(&self.path, e))?;
            let held = file.metadata().map_err(|e| Error::io(&self.path, e))?;
            match std::fs::metadata(&self.path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(file),
                Ok(_) => continue,
                Err(e) => return Err(Error::io(&self.path, e)),
            }
        }
    }

    fn read(&self) -> Result<Vec<Line>, Error> {
        let file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        file.lock_shared().map_err(|e| Error::io(&self.path, e))?;
        read_lines(&file, &self.path)
    }

    /// Streams the lines holding `containing` (a run's id: its records cannot lack it) to
    /// `each` under a shared lock, one line in memory at a time, so reading one run of a large
    /// store costs a scan, not a parse.
    fn scan(&self, containing: &[u8], mut each: impl FnMut(Line)) -> Result<(), Error> {
        let file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        file.lock_shared().map_err(|e| Error::io(&self.path, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut buffer = Vec::new();
        let mut number = 0;
        let finder = regex::bytes::Regex::new(&regex::escape(&String::from_utf8_lossy(containing)))
            .map_err(|e| Error::corrupt(&self.path, "a search that cannot be built", e))?;
        loop {
            buffer.clear();
            let read = reader.read_until(b'\n', &mut buffer).map_err(|e| Error::io(&self.path, e))?;
            if read == 0 {
                return Ok(());
            }
            number += 1;
            if !finder.is_match(&buffer) {
                // Skipped unparsed, but it must still look like a line the store writes: anything
                // else (a hand edit, another file's bytes) is reported by every read, never passed
                // over. A torn last line (no newline) is the crash case, skipped as below.
                let written = buffer.starts_with(b"{\"kind\":\"") && buffer.trim_ascii_end().ends_with(b"}");
                if buffer.ends_with(b"\n") && !written {
                    return Err(Error::Corrupt {
                        path: self.path.clone(),
                        message: format!("line {number}: not a record this store wrote"),
                        source: None,
                    });
                }
                continue;
            }
            match parse_line(&buffer) {
                Ok(line) => each(line),
                // A torn last line from a crash mid-write: it never finished, so it never happened.
                Err(_) if !buffer.ends_with(b"\n") => return Ok(()),
                Err(e) => {
                    return Err(Error::corrupt(&self.path, format!("line {number}"), e));
                }
            }
        }
    }
}

/// Where some of a run's lines are in the store file: consecutive lines of that run.
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    len: u64,
    /// The number of its first line (1 is the file's first), for errors.
    first_line: u64,
}

/// Every run id in order of its first line, with where its lines are.
type RunIndex = Vec<(String, Vec<Span>)>;

/// The lines of a batch of runs, read from the file: each line's run (its place in the batch),
/// number and bytes in `text`.
struct Batch {
    text: Vec<u8>,
    lines: Vec<(usize, u64, std::ops::Range<usize>)>,
}

impl FileStore {
    /// A full read, first pass: where each run's lines are (a span per stretch of consecutive
    /// lines, so memory grows with the runs, not with their records). A step line's run id is
    /// read where the store writes it, without a parse; any other line (a success mark, a lock,
    /// a hand edit) is parsed. A torn last line ends the file, any other line that does not
    /// parse is an error.
    fn index_runs(&self, file: &File) -> Result<RunIndex, Error> {
        let mut runs: RunIndex = Vec::new();
        let mut slots: HashMap<String, usize> = HashMap::new();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut buffer = Vec::new();
        let (mut offset, mut number) = (0u64, 0u64);
        loop {
            buffer.clear();
            let read = reader.read_until(b'\n', &mut buffer).map_err(|e| Error::io(&self.path, e))? as u64;
            if read == 0 {
                return Ok(runs);
            }
            number += 1;
            let id = match step_head_id(&buffer) {
                Some(id) if buffer.ends_with(b"\n") => Some(String::from_utf8_lossy(id)),
                _ => match parse_line(&buffer) {
                    Ok(Line::Step(record)) => Some(std::borrow::Cow::Owned(record.run_id)),
                    Ok(_) => None,
                    // A torn last line from a crash mid-write: it never finished, so it never happened.
                    Err(_) if !buffer.ends_with(b"\n") => return Ok(runs),
                    Err(e) => {
                        return Err(Error::corrupt(&self.path, format!("line {number}"), e));
                    }
                },
            };
            if let Some(id) = id {
                let slot = match slots.get(id.as_ref()) {
                    Some(&slot) => slot,
                    None => {
                        slots.insert(id.to_string(), runs.len());
                        runs.push((id.into_owned(), Vec::new()));
                        runs.len() - 1
                    }
                };
                let spans = &mut runs[slot].1;
                match spans.last_mut() {
                    Some(last) if last.offset + last.len == offset => last.len += read,
                    _ => spans.push(Span { offset, len: read, first_line: number }),
                }
            }
            offset += read;
        }
    }

    /// A full read, second pass: the runs' lines read a batch of runs at a time (about 4 MiB,
    /// a year-old store is 100 MB of JSON: parsing is what a full read costs, so a batch is
    /// parsed on all cores), each run folded and handed to `each` in the index's order.
    fn visit_indexed(
        &self,
        file: &File,
        index: RunIndex,
        each: &mut dyn FnMut(&str, Vec<StepRecord>) -> ControlFlow<()>,
    ) -> Result<(), Error> {
        use rayon::prelude::*;
        const BATCH_BYTES: u64 = 4 << 20;
        let mut runs = index.into_iter().peekable();
        while runs.peek().is_some() {
            let mut ids = Vec::new();
            let mut spans = Vec::new();
            let mut bytes = 0;
            while bytes < BATCH_BYTES
                && let Some((id, of_run)) = runs.next()
            {
                bytes += of_run.iter().map(|s| s.len).sum::<u64>();
                spans.extend(of_run.into_iter().map(|span| (ids.len(), span)));
                ids.push(id);
            }
            let batch = self.read_batch(file, &spans, bytes)?;
            // Each run's lines (the batch lists them run by run), parsed and folded on all cores.
            let mut bounds = Vec::with_capacity(ids.len());
            let mut start = 0;
            for slot in 0..ids.len() {
                let end = start + batch.lines[start..].iter().take_while(|(of, _, _)| *of == slot).count();
                bounds.push(start..end);
                start = end;
            }
            let folded: Vec<_> = bounds.into_par_iter().map(|lines| self.fold_lines(&batch, lines)).collect();
            for (id, records) in ids.iter().zip(folded) {
                if each(id, records?).is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// One run's lines of a batch, parsed and folded into the latest state of its steps.
    fn fold_lines(&self, batch: &Batch, lines: std::ops::Range<usize>) -> Result<Vec<StepRecord>, Error> {
        let mut latest = Vec::new();
        for (_, number, bytes) in &batch.lines[lines] {
            match parse_line(&batch.text[bytes.clone()]) {
                Ok(Line::Step(record)) => fold(&mut latest, record),
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::corrupt(&self.path, format!("line {number}"), e));
                }
            }
        }
        Ok(folded(latest))
    }

    /// The bytes of `spans` (each with its run's place in the batch), split into lines.
    fn read_batch(&self, file: &File, spans: &[(usize, Span)], bytes: u64) -> Result<Batch, Error> {
        use std::os::unix::fs::FileExt;
        let mut batch = Batch { text: Vec::with_capacity(bytes as usize), lines: Vec::new() };
        for (slot, span) in spans {
            let start = batch.text.len();
            batch.text.resize(start + span.len as usize, 0);
            file.read_exact_at(&mut batch.text[start..], span.offset).map_err(|e| Error::io(&self.path, e))?;
            let mut at = start;
            for (n, line) in batch.text[start..].split_inclusive(|b| *b == b'\n').enumerate() {
                batch.lines.push((*slot, span.first_line + n as u64, at..at + line.len()));
                at += line.len();
            }
        }
        Ok(batch)
    }
}

/// How the store writes a step line: its kind, then the record's fields.
const STEP_KIND: &[u8] = br#"{"kind":"step","#;

/// The run id of a step line as the store writes it (`{"kind":"step","run_id":"ID",`), when
/// the id needs no unescaping; `None` for any other shape (parsed instead).
fn step_head_id(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(STEP_KIND)?.strip_prefix(br#""run_id":""#)?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    (rest[end] == b'"').then(|| &rest[..end])
}

/// Parses a line; a step line as the store writes it straight into its record (its `kind`,
/// known from its first bytes, is no field of the record), which spares the buffering an
/// internally tagged enum costs: most of a full read's time.
fn parse_line(line: &[u8]) -> Result<Line, serde_json::Error> {
    if line.starts_with(STEP_KIND) {
        serde_json::from_slice::<StepRecord>(line).map(Line::Step)
    } else {
        serde_json::from_slice::<Line>(line)
    }
}

/// Makes the file end with a newline before a line is appended (the caller holds the exclusive lock).
///
/// Without this, a line appended after a torn last line (a crash mid-write)
/// would be glued to it, turning a harmless torn tail into a corrupt middle
/// line that stops every later read. The torn tail never counted as a record,
/// so it is cut off; a whole record that only lacks its newline (a hand edit)
/// is kept and ended.
fn repair_tail(file: &mut File) -> std::io::Result<()> {
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(());
    }
    // Find the start of the last line, reading backwards a block at a time.
    let mut end = length;
    let mut block = vec![0u8; 64 * 1024];
    let mut start = 0;
    let mut first = true;
    while end > 0 {
        let from = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(chunk)?;
        if first && chunk.last() == Some(&b'\n') {
            return Ok(());
        }
        first = false;
        if let Some(at) = chunk.iter().rposition(|&b| b == b'\n') {
            start = from + at as u64 + 1;
            break;
        }
        end = from;
    }
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(start))?;
    file.read_to_end(&mut tail)?;
    if serde_json::from_slice::<Line>(&tail).is_ok() {
        // Appending: the file is open in append mode, so this lands at the end.
        file.write_all(b"\n")
    } else {
        file.set_len(start)
    }
}

fn read_lines(file: &File, path: &Path) -> Result<Vec<Line>, Error> {
    let mut lines = Vec::new();
    let mut reader = BufReader::new(file);
    // Bytes, not text: a line torn inside a multi-byte character is still just a torn line.
    let mut buffer = Vec::new();
    let mut number = 0;
    loop {
        buffer.clear();
        let read = reader.read_until(b'\n', &mut buffer).map_err(|e| Error::io(path, e))?;
        if read == 0 {
            break;
        }
        number += 1;
        match parse_line(&buffer) {
            Ok(line) => lines.push(line),
            // A torn last line from a crash mid-write: it never finished, so it never happened.
            Err(_) if !buffer.ends_with(b"\n") => break,
            Err(e) => return Err(Error::corrupt(path, format!("line {number}"), e)),
        }
    }
    Ok(lines)
}

/// Folds one more record of a run into the state readers see ([`merge_later`]): one record a
/// step and component (a run has a few dozen, so a search costs less than a keyed map's copies).
fn fold(steps: &mut Vec<StepRecord>, record: StepRecord) {
    match steps.iter().position(|s| s.step == record.step && s.component == record.component) {
        Some(at) => {
            let current = steps.swap_remove(at);
            steps.push(merge_later(current, record));
        }
        None => steps.push(record),
    }
}

/// The folded records in pipeline order (step, then component), a dead runner's step failed.
fn folded(mut steps: Vec<StepRecord>) -> Vec<StepRecord> {
    steps.sort_by(|a, b| (a.step, &a.component).cmp(&(b.step, &b.component)));
    steps.into_iter().map(StepRecord::with_dead_runner_failed).collect()
}

fn latest_steps<'a>(lines: impl Iterator<Item = &'a Line>, run_id: &str) -> Vec<StepRecord> {
    let mut latest = Vec::new();
    for line in lines {
        if let Line::Step(record) = line
            && record.run_id == run_id
        {
            fold(&mut latest, record.clone());
        }
    }
    folded(latest)
}

/// Whether a run may become the new base of an environment whose deploy is recorded as
/// `deploy_step`: nothing failed or is unfinished, `deploy_step` passed (a preview or a skip is
/// no deploy), and for `prod-deploy`, every component whose `deploy` passed passed
/// `prod-deploy` too (what reached the earlier environment reached this one).
pub fn check_success(run_id: &str, deploy_step: Step, records: &[StepRecord]) -> Result<(), Error> {
    if records.is_empty() {
        return Err(Error::UnknownRun { run_id: run_id.into() });
    }
    if let Some(bad) =
        records.iter().find(|r| !r.status.is_final() || matches!(r.status, Status::Failed | Status::Cancelled))
    {
        return Err(Error::NotSuccessful {
            run_id: run_id.into(),
            reason: format!("{} {} is {}", bad.component, bad.step, bad.status),
        });
    }
    let refused = |reason: String| Err(Error::NotSuccessful { run_id: run_id.into(), reason });
    if !records.iter().any(|r| r.step == deploy_step && r.status == Status::Passed) {
        return refused(format!("no {deploy_step} step passed"));
    }
    if deploy_step == Step::ProdDeploy {
        for deployed in records.iter().filter(|r| r.step == Step::Deploy && r.status == Status::Passed) {
            let promoted = records.iter().find(|r| r.step == deploy_step && r.component == deployed.component);
            match promoted.map(|r| r.status) {
                Some(Status::Passed) => {}
                status => {
                    let what = status.map_or_else(|| "never ran".to_string(), |s| format!("is {s}"));
                    return refused(format!(
                        "{} {deploy_step} {what}, but its deploy passed; deploy it with the run's other components first",
                        deployed.component
                    ));
                }
            }
        }
    }
    Ok(())
}

impl Store for FileStore {
    fn record(&self, record: &StepRecord) -> Result<(), Error> {
        let mut record = record.clone();
        record.details = redact::details(record.details);
        self.append_with(|_| Ok(Line::Step(record))).map(drop)
    }

    fn run(&self, run_id: &str) -> Result<Vec<StepRecord>, Error> {
        let mut latest = Vec::new();
        self.scan(run_id.as_bytes(), |line| {
            if let Line::Step(record) = line
                && record.run_id == run_id
            {
                fold(&mut latest, record);
            }
        })?;
        Ok(folded(latest))
    }

    fn run_ids(&self) -> Result<Vec<String>, Error> {
        let file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        file.lock_shared().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.index_runs(&file)?.into_iter().map(|(id, _)| id).collect())
    }

    // Two passes under one shared lock: where each run's lines are, then a batch of runs at a
    // time, so only the index and one batch are held, however the runs' lines interleave.
    fn for_each_run(&self, each: &mut dyn FnMut(&str, Vec<StepRecord>) -> ControlFlow<()>) -> Result<(), Error> {
        let file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        file.lock_shared().map_err(|e| Error::io(&self.path, e))?;
        let index = self.index_runs(&file)?;
        self.visit_indexed(&file, index, each)
    }

    fn mark_success_for(&self, run_id: &str, env: &str, deploy_step: Step) -> Result<SuccessMark, Error> {
        crate::check_name("environment", env)?;
        // Checked and appended under one lock, so no failing record can slip in between.
        let line = self.append_with(|file| {
            let records = latest_steps(read_lines(file, &self.path)?.iter(), run_id);
            check_success(run_id, deploy_step, &records)?;
            Ok(Line::Success(SuccessMark {
                run_id: run_id.into(),
                env: env.into(),
                commit: records[0].commit.clone(),
                at: Some(SystemTime::now()),
            }))
        })?;
        match line {
            Line::Success(mark) => Ok(mark),
            _ => unreachable!("mark_success appends a success line"),
        }
    }

    fn last_success(&self, env: &str) -> Result<Option<SuccessMark>, Error> {
        Ok(self.read()?.into_iter().rev().find_map(|line| match line {
            Line::Success(mark) if mark.env == env => Some(mark),
            _ => None,
        }))
    }

    fn acquire_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<(), Error> {
        // Checked and appended under the store's exclusive lock: two deploys cannot both take it.
        self.append_with(|file| {
            let now = SystemTime::now();
            if let Some(current) = current_lock(&read_lines(file, &self.path)?, name)
                && current.holder != holder
                && !current.stale(now)
            {
                return Err(Error::Locked { name: name.into(), holder: current.holder, since: current.since });
            }
            let (process, process_identity) = crate::this_process().unzip();
            Ok(Line::Lock(LockRecord {
                name: name.into(),
                holder: holder.into(),
                since: Some(now),
                ttl_secs: ttl.as_secs().max(1),
                released: false,
                process,
                process_identity,
            }))
        })
        .map(drop)
    }

    fn release_lock(&self, name: &str, holder: &str) -> Result<(), Error> {
        let file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        file.lock_shared().map_err(|e| Error::io(&self.path, e))?;
        let held = current_lock(&read_lines(&file, &self.path)?, name).is_some_and(|l| l.holder == holder);
        file.unlock().map_err(|e| Error::io(&self.path, e))?;
        drop(file);
        if !held {
            return Ok(());
        }
        // Another holder may only take it over once it is stale, so appending now is safe.
        self.append_with(|_| {
            Ok(Line::Lock(LockRecord {
                name: name.into(),
                holder: holder.into(),
                since: Some(SystemTime::now()),
                ttl_secs: 0,
                released: true,
                process: None,
                process_identity: None,
            }))
        })
        .map(drop)
    }
}

/// The lock `name` as the latest line says, when it is held.
fn current_lock(lines: &[Line], name: &str) -> Option<LockRecord> {
    let latest = lines.iter().rev().find_map(|line| match line {
        Line::Lock(lock) if lock.name == name => Some(lock.clone()),
        _ => None,
    })?;
    (!latest.released).then_some(latest)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn running(runner: Option<String>, runner_process: Option<String>) -> StepRecord {
        let mut record = StepRecord::new("r1", "abc", "api", Step::Test, Status::Running);
        record.details.runner = runner;
        record.details.runner_process = runner_process;
        record
    }

    #[test]
    fn a_step_whose_runner_died_reads_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let mut this = StepRecord::new("r2", "abc", "pipeline", Step::Diff, Status::Running);
        this.details.set_runner_to_this_process();
        let runner = this.details.runner.clone().expect("/proc cannot say who this process is; the test cannot tell");
        let host = runner.rsplit_once(':').unwrap().0.to_string();
        store.record(&this).unwrap();

        // A real runner process: alive, then killed and reaped, so its pid names no process.
        let mut child = Command::new("sleep").arg("300").spawn().unwrap();
        let pid = child.id();
        let identity = crate::record::process_identity(pid).expect("cannot read the child's /proc entry");
        store.record(&running(Some(format!("{host}:{pid}")), Some(identity))).unwrap();
        assert_eq!(store.run("r1").unwrap().iter().find(|r| r.component == "api").unwrap().status, Status::Running);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            matches!(std::fs::read_to_string(format!("/proc/{pid}/stat")), Err(e) if e.kind() == std::io::ErrorKind::NotFound),
            "pid {pid} was reused or cannot be read; the test cannot tell"
        );

        let records = store.run("r1").unwrap();
        let api = records.iter().find(|r| r.component == "api").unwrap();
        assert_eq!(api.status, Status::Failed);
        assert_eq!(api.details.error.as_deref(), Some(format!("runner died (pid {pid} on {host})").as_str()));
        // The runs listing and the success check read the same.
        let runs = store.runs().unwrap();
        let (_, listed) = runs.iter().find(|(id, _)| id == "r1").unwrap();
        assert_eq!(listed.iter().find(|r| r.component == "api").unwrap().status, Status::Failed);
        let refused = store.mark_success("r1", "dev").unwrap_err().to_string();
        assert!(refused.contains("api test is failed"), "{refused}");
        // The step this process runs is alive, so it stays running.
        assert_eq!(store.run("r2").unwrap()[0].status, Status::Running);
    }

    #[test]
    fn a_runner_that_cannot_be_checked_from_here_is_not_taken_for_dead() {
        let mut this = running(None, None);
        this.details.set_runner_to_this_process();
        let (host, pid) =
            this.details.runner.clone().unwrap().rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
        let identity = this.details.runner_process.clone().unwrap();
        let (namespace, start) = identity.split_once('/').unwrap();
        // Another host, another pid namespace, no runner at all, or a step that already ended.
        for record in [
            running(Some(format!("{host}-elsewhere:999999999")), Some(identity.clone())),
            running(Some(format!("{host}:999999999")), Some(format!("pid:[1]/{start}"))),
            running(None, None),
            StepRecord { status: Status::Passed, ..running(Some(format!("{host}:999999999")), Some(identity.clone())) },
        ] {
            assert_eq!(record.runner_died(), None, "{record:?}");
        }
        // The same pid started at another time is another process: the runner is gone.
        let reused =
            running(Some(format!("{host}:{pid}")), Some(format!("{namespace}/{}", start.parse::<u64>().unwrap() + 1)));
        assert_eq!(reused.runner_died(), Some(format!("runner died (pid {pid} on {host})")));
        assert_eq!(this.runner_died(), None);
    }

    #[test]
    fn a_pipeline_step_names_its_runner_while_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let seen = crate::record_pipeline_step(&store, "r1", "abc", Step::Diff, || {
            let record = store.run("r1").unwrap().remove(0);
            Ok::<_, std::io::Error>((record, "done".to_string()))
        })
        .unwrap()
        .unwrap();
        assert_eq!(seen.status, Status::Running);
        assert!(seen.details.runner.as_deref().unwrap().ends_with(&format!(":{}", std::process::id())));
        let done = store.run("r1").unwrap().remove(0);
        assert_eq!((done.status, done.details.runner), (Status::Passed, None));
    }

    fn with_note(mut record: StepRecord, note: &str) -> StepRecord {
        record.details.note = Some(note.into());
        record
    }

    #[test]
    fn a_later_skip_or_rerun_never_replaces_a_result_and_a_failure_stays_until_a_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let rec = |status| StepRecord::new("r1", "abc", "infra", Step::Deploy, status);
        let mut failed = rec(Status::Failed);
        failed.details.error = Some("stack master: rolled back".into());
        store.record(&rec(Status::Running)).unwrap();
        store.record(&failed).unwrap();
        // A rerun as a preview: running, then skipped. The failure stays; the skip is noted.
        store.record(&rec(Status::Running)).unwrap();
        store.record(&with_note(rec(Status::Skipped), "preview only (--no-execute)")).unwrap();
        let read = |store: &FileStore| {
            let from_run = store.run("r1").unwrap().remove(0);
            let (_, mut listed) = store.runs().unwrap().remove(0);
            assert_eq!(listed.remove(0), from_run, "run and runs read the same");
            from_run
        };
        let seen = read(&store);
        assert_eq!(seen.status, Status::Failed);
        assert_eq!(seen.details.error.as_deref(), Some("stack master: rolled back"));
        assert_eq!(seen.details.note.as_deref(), Some("later skipped: preview only (--no-execute)"));
        // A second skip keeps only the newest reason.
        store.record(&with_note(rec(Status::Skipped), "preview again")).unwrap();
        assert_eq!(read(&store).details.note.as_deref(), Some("later skipped: preview again"));
        // The success check reads the failure.
        let refused = store.mark_success("r1", "dev").unwrap_err().to_string();
        assert!(refused.contains("infra deploy is failed"), "{refused}");
        // A real deploy that passes replaces it; a later skip then keeps the pass.
        store.record(&with_note(rec(Status::Passed), "stack master: deployed")).unwrap();
        store.record(&with_note(rec(Status::Skipped), "preview only")).unwrap();
        let seen = read(&store);
        assert_eq!(seen.status, Status::Passed);
        assert_eq!(seen.details.note.as_deref(), Some("stack master: deployed | later skipped: preview only"));
        // A skip is no result: whatever comes after it replaces it.
        let other = |status| StepRecord::new("r1", "abc", "web", Step::Deploy, status);
        store.record(&other(Status::Skipped)).unwrap();
        store.record(&other(Status::Running)).unwrap();
        assert_eq!(store.run("r1").unwrap()[1].status, Status::Running);
        store.record(&other(Status::Passed)).unwrap();
        assert_eq!(store.run("r1").unwrap()[1].status, Status::Passed);
        // The lines are all kept: the weaker records are in the file beside the results.
        let lines = std::fs::read_to_string(store.path()).unwrap();
        assert_eq!(lines.matches(r#""status":"skipped""#).count(), 4, "{lines}");
    }

    #[test]
    fn a_mark_for_a_promoted_environment_needs_every_deployed_component_promoted() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let rec = |component: &str, step, status| StepRecord::new("r1", "abc", component, step, status);
        store.record(&rec("infra", Step::Deploy, Status::Passed)).unwrap();
        store.record(&rec("frontend", Step::Deploy, Status::Passed)).unwrap();
        // Dev only: a dev mark is fine, a prod mark is refused, and nothing is marked for prod.
        store.mark_success_for("r1", "dev", Step::Deploy).unwrap();
        let refused = store.mark_success_for("r1", "prod", Step::ProdDeploy).unwrap_err();
        assert!(
            matches!(&refused, Error::NotSuccessful { reason, .. } if reason == "no prod-deploy step passed"),
            "{refused}"
        );
        // One component promoted, the other not.
        store.record(&rec("infra", Step::ProdDeploy, Status::Passed)).unwrap();
        store.record(&rec("frontend", Step::ProdDeploy, Status::Skipped)).unwrap();
        let refused = store.mark_success_for("r1", "prod", Step::ProdDeploy).unwrap_err().to_string();
        assert!(refused.contains("frontend prod-deploy is skipped, but its deploy passed"), "{refused}");
        assert_eq!(store.last_success("prod").unwrap(), None);
        store.record(&rec("frontend", Step::ProdDeploy, Status::Passed)).unwrap();
        assert_eq!(store.mark_success_for("r1", "prod", Step::ProdDeploy).unwrap().commit, "abc");
        assert_eq!(store.last_success("prod").unwrap().unwrap().run_id, "r1");
    }

    #[test]
    fn a_lock_is_refused_to_another_holder_until_released_or_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let hour = std::time::Duration::from_secs(3600);
        store.acquire_lock("deploy/app-dev", "run-1 host:1", hour).unwrap();
        // The holder may take it again (renew); another may not.
        store.acquire_lock("deploy/app-dev", "run-1 host:1", hour).unwrap();
        let refused = store.acquire_lock("deploy/app-dev", "run-2 host:2", hour).unwrap_err();
        assert!(
            matches!(&refused, Error::Locked { holder, since: Some(_), .. } if holder == "run-1 host:1"),
            "{refused}"
        );
        assert!(refused.to_string().starts_with("`deploy/app-dev` is locked by run-1 host:1 since 20"), "{refused}");
        // Another lock is independent.
        store.acquire_lock("deploy/app-prod", "run-2 host:2", hour).unwrap();
        // Releasing by someone else changes nothing; by the holder frees it.
        store.release_lock("deploy/app-dev", "run-2 host:2").unwrap();
        assert!(store.acquire_lock("deploy/app-dev", "run-2 host:2", hour).is_err());
        store.release_lock("deploy/app-dev", "run-1 host:1").unwrap();
        store.acquire_lock("deploy/app-dev", "run-2 host:2", hour).unwrap();
        // Records still read around lock lines.
        store.record(&StepRecord::new("run-1", "abc", "api", Step::Deploy, Status::Passed)).unwrap();
        assert_eq!(store.run("run-1").unwrap().len(), 1);
    }

    #[test]
    fn a_stale_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.acquire_lock("deploy/app-dev", "crashed", std::time::Duration::from_secs(1)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2100));
        store.acquire_lock("deploy/app-dev", "next", std::time::Duration::from_secs(60)).unwrap();
        assert!(store.acquire_lock("deploy/app-dev", "crashed", std::time::Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_lock_whose_process_died_on_this_host_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let hour = std::time::Duration::from_secs(3600);
        let (this, identity) = crate::this_process().expect("/proc is readable here");
        let host = this.rsplit_once(':').unwrap().0;
        let namespace = identity.split_once('/').unwrap().0;
        // A process that has ended (reaped): its pid is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let lock = |process: &str, identity: String| {
            let line = Line::Lock(LockRecord {
                name: "deploy/app-dev".into(),
                holder: "run-1 (killed)".into(),
                since: Some(SystemTime::now()),
                ttl_secs: 7200,
                released: false,
                process: Some(process.into()),
                process_identity: Some(identity),
            });
            let mut text = serde_json::to_string(&line).unwrap();
            text.push('\n');
            std::fs::OpenOptions::new().append(true).open(store.path()).unwrap().write_all(text.as_bytes()).unwrap();
        };
        // A live holder (this very process) keeps it for its ttl.
        lock(&this, identity.clone());
        let refused = store.acquire_lock("deploy/app-dev", "run-2", hour).unwrap_err();
        assert!(matches!(&refused, Error::Locked { holder, .. } if holder == "run-1 (killed)"), "{refused}");
        // So does one on another host: "cannot tell" is not dead.
        lock(&format!("elsewhere:{pid}"), format!("{namespace}/1"));
        assert!(store.acquire_lock("deploy/app-dev", "run-2", hour).is_err());
        // A dead one on this host: taken over at once, well inside its two hours.
        lock(&format!("{host}:{pid}"), format!("{namespace}/1"));
        store.acquire_lock("deploy/app-dev", "run-2", hour).unwrap();
        assert!(store.acquire_lock("deploy/app-dev", "run-3", hour).is_err(), "run-2, alive, holds it now");
    }

    /// Appends lines as the store writes them, without its lock or fsync (many lines, quickly).
    fn append_lines(store: &FileStore, lines: &[Line]) {
        let mut text = Vec::new();
        for line in lines {
            serde_json::to_writer(&mut text, line).unwrap();
            text.push(b'\n');
        }
        std::fs::OpenOptions::new().append(true).open(store.path()).unwrap().write_all(&text).unwrap();
    }

    fn visited(store: &FileStore) -> Vec<(String, Vec<StepRecord>)> {
        let mut seen = Vec::new();
        store
            .for_each_run(&mut |id, records| {
                seen.push((id.to_string(), records));
                ControlFlow::Continue(())
            })
            .unwrap();
        seen
    }

    #[test]
    fn a_visit_hands_over_each_run_once_oldest_first_however_its_lines_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let rec = |run: &str, component: &str, step, status| StepRecord::new(run, "abc", component, step, status);
        // r1 begins, r2 and r3 run between its steps, a success mark and a lock among them, and
        // r1's last step comes after everything else.
        store.record(&rec("r1", "api", Step::Test, Status::Running)).unwrap();
        store.record(&rec("r2", "api", Step::Build, Status::Passed)).unwrap();
        store.record(&rec("r1", "api", Step::Test, Status::Failed)).unwrap();
        store.record(&rec("r2", "api", Step::Deploy, Status::Passed)).unwrap();
        store.mark_success("r2", "dev").unwrap();
        store.acquire_lock("deploy/app-dev", "r3", Duration::from_secs(60)).unwrap();
        store.record(&rec("r3", "web", Step::Build, Status::Passed)).unwrap();
        store.record(&rec("r1", "api", Step::Test, Status::Passed)).unwrap();
        store.record(&rec("r1", "web", Step::Build, Status::Skipped)).unwrap();

        let seen = visited(&store);
        let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2", "r3"]);
        assert_eq!(store.run_ids().unwrap(), ids);
        for (id, records) in &seen {
            assert_eq!(records, &store.run(id).unwrap(), "{id}: the visit and the one-run read disagree");
        }
        // r1's test: running, failed, then passed: the pass replaces the failure.
        let statuses: Vec<Status> = seen[0].1.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [Status::Skipped, Status::Passed], "{:?}", seen[0].1);
        assert_eq!(store.runs().unwrap(), seen);

        // Stopped after the first run: the others are not handed over.
        let mut calls = Vec::new();
        store
            .for_each_run(&mut |id, _| {
                calls.push(id.to_string());
                ControlFlow::Break(())
            })
            .unwrap();
        assert_eq!(calls, ["r1"]);
    }

    #[test]
    fn a_visit_of_a_store_larger_than_a_batch_keeps_runs_whole_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        // A long-lived run with a line every 1,000 lines, among 6,000 short runs of three steps
        // (about 6 MB, more than one 4 MiB batch), the short runs' lines two by two interleaved.
        let step = |run: String, component: &str, step, status| {
            let mut record = StepRecord::new(&run, "abc", component, step, status);
            record.details.log_tail = Some("x".repeat(200));
            Line::Step(record)
        };
        let mut lines = Vec::new();
        for n in 0..6_000 {
            if n % 1000 == 0 {
                lines.push(step("long".into(), &format!("c{n}"), Step::Test, Status::Passed));
            }
            let (this, other) = (format!("short-{n:05}"), format!("short-{:05}", n ^ 1));
            lines.push(step(this.clone(), "api", Step::Build, Status::Passed));
            lines.push(step(other.clone(), "api", Step::Test, Status::Running));
            lines.push(step(this, "api", Step::Test, if n % 7 == 0 { Status::Failed } else { Status::Passed }));
            lines.push(step(other, "web", Step::Build, Status::Passed));
        }
        append_lines(&store, &lines);
        assert!(std::fs::metadata(store.path()).unwrap().len() > 5 << 20);

        let seen = visited(&store);
        assert_eq!(seen.len(), 6_001);
        assert_eq!(seen[0].0, "long");
        assert_eq!(seen[0].1.len(), 6, "the long run's six components: {:?}", seen[0].1);
        // Short runs in order of their first line: 0 (its build), then 1 (its test, line 2)...
        for (n, (id, records)) in seen[1..].iter().enumerate() {
            assert_eq!(id, &format!("short-{n:05}"));
            let test = records.iter().find(|r| r.step == Step::Test).unwrap();
            let expected = if n % 7 == 0 { Status::Failed } else { Status::Passed };
            assert_eq!((records.len(), test.status), (3, expected), "{id}: {records:?}");
        }
        assert_eq!(seen[4_321].1, store.run("short-04320").unwrap());
    }

    #[test]
    fn a_run_id_that_needs_escaping_is_read_through_a_parse_and_still_visited() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        for id in [r#"odd "quoted" \ id"#, "plain"] {
            store.record(&StepRecord::new(id, "abc", "api", Step::Test, Status::Passed)).unwrap();
        }
        let lines = std::fs::read_to_string(store.path()).unwrap();
        let heads: Vec<Option<&[u8]>> = lines.lines().map(|l| step_head_id(l.as_bytes())).collect();
        assert_eq!(heads, [None, Some(&b"plain"[..])]);
        let ids: Vec<String> = visited(&store).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [r#"odd "quoted" \ id"#, "plain"]);
        assert_eq!(store.run_ids().unwrap(), ids);
    }

    #[test]
    fn a_visit_skips_a_torn_last_line_and_refuses_a_corrupt_one_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.record(&StepRecord::new("r1", "abc", "api", Step::Test, Status::Passed)).unwrap();
        let whole = std::fs::read_to_string(store.path()).unwrap();
        // A crash mid-write: the last line has no end, and never happened.
        let torn = format!("{whole}{}", &whole.replace("r1", "r2")[..60]);
        std::fs::write(store.path(), &torn).unwrap();
        let ids: Vec<String> = visited(&store).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["r1"]);
        // A step line whose body is broken (its head read, its record not), or a foreign line:
        // the read fails naming the line, whichever pass meets it.
        for bad in [whole.replace("\"status\":\"passed\"", "\"status\":\"fine\""), "not json\n".to_string()] {
            std::fs::write(store.path(), format!("{whole}{bad}{whole}")).unwrap();
            let error = store.for_each_run(&mut |_, _| ControlFlow::Continue(())).unwrap_err();
            assert!(matches!(&error, Error::Corrupt { message, .. } if message == "line 2"), "{error}");
            assert!(std::error::Error::source(&error).is_some(), "the parser's error is the source: {error:?}");
        }
    }
}
