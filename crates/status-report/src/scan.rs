//! A file store's runs as [`crate::stats`] needs them, in one pass over the file.
//!
//! [`Store::for_each_run`](run_state::Store::for_each_run) parses every record whole (its
//! log tail, its commit, its notes) and folds each run before handing it over: most of what
//! reading a year of runs (200 MB) costs. The figures need a few fields of each record
//! ([`Fact`]): each step line is parsed here into those alone, the other fields checked (a
//! string is a string) but not kept, and each run's steps folded as the store folds them.
//!
//! What [`read`] hands over is what the store's visit hands over, as the figures see it: the
//! runs in the order of their first line; each step's latest state ([`run_state::supersede`],
//! a later skip's reason kept in validate's note by [`run_state::merge_later`]); a pending or
//! running step whose runner died failed ([`StepRecord::with_dead_runner_failed`]); a torn last
//! line skipped; and for a line the store did not write, the store's own error (the same line,
//! the same words: such a line is parsed again whole, as the store parses it). Lines it cannot
//! read its own way (an id or a note with escapes, a time in another form) are parsed whole too.
//!
//! Memory: every run's folded facts until the end of the file (a run's lines may come late: an
//! approval decided the next day), about 1 KB a run, not the records.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use run_state::{Error, LockRecord, Ratio, Status, Step, StepRecord, SuccessMark, Supersede};
use serde::Deserialize;

use crate::stats::{Fact, findings_of, is_validate};

/// How the store writes a step line: its kind, then the record's fields (as `run_state`
/// writes it: a line in another shape is parsed as the store parses it).
const STEP_KIND: &[u8] = br#"{"kind":"step","#;

/// How much of the file is read at a time.
const CHUNK: usize = 4 << 20;

/// The run id of a step line as the store writes it (`{"kind":"step","run_id":"ID",`), when
/// the id needs no unescaping: the store indexes such a line by it without a parse, and reports
/// a fault in it only when it reaches its run.
fn step_head_id(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(STEP_KIND)?.strip_prefix(br#""run_id":""#)?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    (rest[end] == b'"').then(|| &rest[..end])
}

/// A step line in the store's own shape, read without a parser: the fields in the order the
/// store writes them, no space, texts without escapes, numbers in plain digits, no release
/// digest. Anything else (which [`StepRecord`] may still take, or refuse) is not read here:
/// `None`, and the line is parsed whole. What is read is checked as the parser checks it (a
/// text is a string, a count a `u64`, a required field present), so no line the store refuses
/// is taken. The caller has checked the line is UTF-8 without control characters.
fn own_shape<'a>(line: &'a str, quotes: &[u32]) -> Option<(&'a str, Parsed<'a>)> {
    const FIELDS: &[&str] =
        &["kind", "run_id", "commit", "component", "step", "status", "started_at", "ended_at", "details"];
    let mut c = Cursor { text: line.strip_suffix('\n').unwrap_or(line), at: 0, quotes, next: 0 };
    let (mut run_id, mut component, mut commit) = (None, None, None);
    let (mut step, mut status, mut times, mut details) = (None, None, [None, None], None);
    c.object(FIELDS, |c, field| {
        match field {
            0 => (c.string()? == "step").then_some(())?,
            1 => run_id = Some(c.string()?),
            2 => commit = Some(c.string()?),
            3 => component = Some(c.string()?),
            4 => step = Some(c.string()?.parse::<Step>().ok()?),
            5 => status = Some(c.string()?.parse::<Status>().ok()?),
            6 | 7 => times[field - 6] = c.or_null(Cursor::string)?,
            _ => details = Some(c.details()?),
        }
        Some(())
    })?;
    if c.at != c.text.len() {
        return None;
    }
    let (_, component, step, status) = (commit?, component?, step?, status?);
    let time = |text: Option<&str>| match text {
        None => Some(None),
        Some(text) => humantime::parse_rfc3339_weak(text).ok().map(Some),
    };
    let details = details.unwrap_or_default();
    let texts = (is_validate(step, component) || !status.is_final()).then(|| {
        Box::new(Texts {
            note: details.note.map(str::to_string),
            error: details.error.map(str::to_string),
            runner: details.runner.map(str::to_string),
            runner_process: details.runner_process.map(str::to_string),
        })
    });
    let parsed = Parsed {
        component: Cow::Borrowed(component),
        step,
        status,
        started_at: time(times[0])?,
        ended_at: time(times[1])?,
        coverage: details.coverage.map(Box::new),
        texts,
    };
    Some((run_id?, parsed))
}

/// What the figures read of a line's details.
#[derive(Default)]
struct LineDetails<'a> {
    error: Option<&'a str>,
    note: Option<&'a str>,
    runner: Option<&'a str>,
    runner_process: Option<&'a str>,
    coverage: Option<(Ratio, Option<Ratio>)>,
}

/// Whether two short byte strings are equal (without a call to `memcmp` for a few bytes).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// A place in a line read by [`own_shape`]; each reading `None` where the line leaves the
/// store's own shape.
struct Cursor<'a, 'q> {
    text: &'a str,
    at: usize,
    /// Where the line's quotes are (it has no backslash), and the next one to read.
    quotes: &'q [u32],
    next: usize,
}

impl<'a> Cursor<'a, '_> {
    fn eat(&mut self, token: &str) -> Option<()> {
        let rest = self.text.as_bytes().get(self.at..self.at + token.len())?;
        same(rest, token.as_bytes()).then(|| self.at += token.len())
    }

    /// A string without escapes.
    fn string(&mut self) -> Option<&'a str> {
        // The line holds no backslash: each quote opens or closes a string.
        while self.quotes.get(self.next).is_some_and(|&q| (q as usize) < self.at) {
            self.next += 1;
        }
        let (open, close) = (*self.quotes.get(self.next)? as usize, *self.quotes.get(self.next + 1)? as usize);
        (open == self.at).then_some(())?;
        self.next += 2;
        self.at = close + 1;
        Some(&self.text[open + 1..close])
    }

    /// `null`, or what `read` reads.
    fn or_null<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.eat("null").is_some() { Some(None) } else { read(self).map(Some) }
    }

    /// Plain digits, no leading zero, within a `u64`.
    fn count(&mut self) -> Option<u64> {
        let rest = &self.text.as_bytes()[self.at..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 19 || (digits > 1 && rest[0] == b'0') {
            return None;
        }
        let value = self.text[self.at..self.at + digits].parse().ok()?;
        self.at += digits;
        Some(value)
    }

    /// A plain decimal (`70`, `72.5`), which an `f64` always takes.
    fn decimal(&mut self) -> Option<()> {
        self.count()?;
        if self.eat(".").is_some() {
            let rest = &self.text.as_bytes()[self.at..];
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            (1..=15).contains(&digits).then(|| self.at += digits)?;
        }
        Some(())
    }

    /// An object whose keys are some of `fields`, in that order, each value read by `value`
    /// (given the field's place in `fields`).
    fn object(&mut self, fields: &[&str], mut value: impl FnMut(&mut Self, usize) -> Option<()>) -> Option<()> {
        self.eat("{")?;
        if self.eat("}").is_some() {
            return Some(());
        }
        let mut next = 0;
        loop {
            let key = self.string()?;
            self.eat(":")?;
            let field = next + fields.get(next..)?.iter().position(|f| same(f.as_bytes(), key.as_bytes()))?;
            value(self, field)?;
            next = field + 1;
            if self.eat("}").is_some() {
                return Some(());
            }
            self.eat(",")?;
        }
    }

    /// `{"covered":N,"total":N}`.
    fn ratio(&mut self) -> Option<Ratio> {
        let (mut covered, mut total) = (None, None);
        self.object(&["covered", "total"], |c, field| {
            let n = Some(c.count()?);
            if field == 0 {
                covered = n
            } else {
                total = n
            }
            Some(())
        })?;
        Some(Ratio { covered: covered?, total: total? })
    }

    /// A step's details; a release digest is left to the parser.
    fn details(&mut self) -> Option<LineDetails<'a>> {
        const FIELDS: &[&str] =
            &["error", "log_tail", "log_path", "note", "runner", "runner_process", "by", "coverage"];
        let mut details = LineDetails::default();
        self.object(FIELDS, |c, field| {
            match field {
                0 => details.error = c.or_null(Cursor::string)?,
                3 => details.note = c.or_null(Cursor::string)?,
                4 => details.runner = c.or_null(Cursor::string)?,
                5 => details.runner_process = c.or_null(Cursor::string)?,
                7 => details.coverage = c.or_null(Cursor::coverage)?,
                _ => drop(c.or_null(Cursor::string)?),
            }
            Some(())
        })?;
        Some(details)
    }

    /// A test's coverage: its lines and branches read, the rest checked; listed files are
    /// left to the parser.
    fn coverage(&mut self) -> Option<(Ratio, Option<Ratio>)> {
        const FIELDS: &[&str] = &[
            "report",
            "lines",
            "branches",
            "changed_lines",
            "min_lines",
            "min_branches",
            "min_changed_lines",
            "files",
            "unreported",
        ];
        let (mut report, mut lines, mut branches) = (None, None, None);
        self.object(FIELDS, |c, field| {
            match field {
                0 => report = Some(c.string()?),
                1 => lines = Some(c.ratio()?),
                2 => branches = c.or_null(Cursor::ratio)?,
                3 => drop(c.or_null(Cursor::ratio)?),
                4..=6 => drop(c.or_null(Cursor::decimal)?),
                7 => c.eat("[]")?,
                _ => drop(c.count()?),
            }
            Some(())
        })?;
        report?;
        Some((lines?, branches))
    }
}

/// A line of another kind, as the store reads it (its `Line`): a step in another shape is kept,
/// a success mark or a lock is checked and passed over.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[allow(dead_code)]
enum OtherLine {
    Step(StepRecord),
    Success(SuccessMark),
    Lock(LockRecord),
}

/// The texts of a record the figures may read: validate's note and error (its findings), and
/// a pending or running step's runner (whether it died).
#[derive(Debug, Default, Clone)]
struct Texts {
    note: Option<String>,
    error: Option<String>,
    runner: Option<String>,
    runner_process: Option<String>,
}

/// One step of one run as the figures need it: [`Parsed`] names its component, [`Held`] (once
/// its run's steps are folded) has the component's place instead.
#[derive(Debug)]
struct StepFacts<C> {
    component: C,
    step: Step,
    status: Status,
    started_at: Option<SystemTime>,
    ended_at: Option<SystemTime>,
    coverage: Option<Box<(Ratio, Option<Ratio>)>>,
    texts: Option<Box<Texts>>,
}

impl<C> StepFacts<C> {
    /// The same step with its component as `component`.
    fn with_component<D>(self, component: D) -> StepFacts<D> {
        let StepFacts { component: _, step, status, started_at, ended_at, coverage, texts } = self;
        StepFacts { component, step, status, started_at, ended_at, coverage, texts }
    }
}

/// A step as parsed, before its run and component are looked up.
type Parsed<'a> = StepFacts<Cow<'a, str>>;

/// A step folded into its run, its component by its place in [`Runs::components`].
type Held = StepFacts<u32>;

impl Held {
    /// The record as far as [`run_state::supersede`], [`run_state::merge_later`] and
    /// [`StepRecord::with_dead_runner_failed`] read it.
    fn bare(&self) -> StepRecord {
        let mut record = StepRecord::new("", "", "", self.step, self.status);
        if let Some(texts) = &self.texts {
            record.details.note = texts.note.clone();
            record.details.error = texts.error.clone();
            record.details.runner = texts.runner.clone();
            record.details.runner_process = texts.runner_process.clone();
        }
        record
    }

    /// Folds a later record of the same step and component into this one, as the store does.
    fn merge(&mut self, later: Held) {
        let status_only = |h: &Held| StepRecord::new("", "", "", h.step, h.status);
        match run_state::supersede(&status_only(self), &status_only(&later)) {
            Supersede::Replace => *self = later,
            // Kept: a later skip's reason goes into the note, read only of validate (the only
            // kept result with texts).
            Supersede::Keep => {
                if self.texts.is_some() {
                    let merged = run_state::merge_later(self.bare(), later.bare());
                    if let Some(texts) = &mut self.texts {
                        texts.note = merged.details.note;
                    }
                }
            }
        }
    }

    /// A pending or running step whose runner died, failed.
    fn with_dead_runner_failed(mut self) -> Held {
        if !self.status.is_final() && self.texts.as_ref().is_some_and(|t| t.runner.is_some()) {
            let record = self.bare().with_dead_runner_failed();
            self.status = record.status;
            if let Some(texts) = &mut self.texts {
                texts.error = record.details.error;
            }
        }
        self
    }
}

/// One run: its id, its steps folded, and the store's error for the first of its lines that
/// does not parse (the store reports it when it reaches the run).
#[derive(Debug)]
struct Run {
    id: Box<str>,
    held: Vec<Held>,
    error: Option<Box<Error>>,
    /// From its first line's start to its last line's end, in the file.
    lines: Range<u64>,
}

/// Every run of the file, in the order of its first line.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    path: PathBuf,
    components: Vec<Box<str>>,
    component_slots: HashMap<Box<str>, u32>,
    runs: Vec<Run>,
    slots: HashMap<Box<str>, usize>,
    /// The run of the line before (a run's lines mostly come together).
    last: Option<usize>,
    /// The lines not in the shape the store writes (the number and place of each), which its
    /// read of one run refuses unless they hold the run's id.
    unwritten: Vec<(u64, Range<u64>)>,
}

/// What a line is, read on its own (lines are read on all cores, then folded in order).
enum LineRead<'a> {
    /// A step of run `id`.
    Step(Cow<'a, str>, Parsed<'a>),
    /// A step line the store places by its head (`id`), that does not parse: the store
    /// reports it when it reaches the run.
    Fault(Cow<'a, str>, serde_json::Error),
    /// A success mark or a lock, or a torn last line.
    Nothing,
    /// A line the store cannot place in a run: it stops the read.
    Corrupt(serde_json::Error),
}

/// The runs of the file store file `path` ([`Runs::visit`]), read under its shared lock, a
/// few MiB at a time, each part's lines parsed on all cores.
pub(crate) fn read(path: &Path) -> Result<Runs, Error> {
    use rayon::prelude::*;
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    file.lock_shared().map_err(|e| Error::io(path, e))?;
    let mut runs = Runs { path: path.to_path_buf(), ..Runs::default() };
    // About a run every 4 KiB of a store (a dozen steps): room made once, not grown.
    let expected = file.metadata().map_or(0, |m| m.len() / 4096).min(1 << 20) as usize;
    runs.runs.reserve(expected);
    runs.slots.reserve(expected);
    let mut buffer = vec![0u8; CHUNK];
    let (mut filled, mut number, mut offset) = (0, 0u64, 0u64);
    let mut lines: Vec<std::ops::Range<usize>> = Vec::new();
    loop {
        if filled == buffer.len() {
            buffer.resize(buffer.len() * 2, 0);
        }
        let read = file.read(&mut buffer[filled..]).map_err(|e| Error::io(path, e))?;
        let end = if read == 0 {
            filled
        } else {
            filled += read;
            match memchr::memrchr(b'\n', &buffer[..filled]) {
                Some(at) => at + 1,
                None => continue,
            }
        };
        lines.clear();
        let mut from = 0;
        for at in memchr::memchr_iter(b'\n', &buffer[..end]) {
            lines.push(from..at + 1);
            from = at + 1;
        }
        if from < end {
            lines.push(from..end);
        }
        let text = &buffer[..end];
        let parsed: Vec<LineRead> =
            lines.par_iter().with_min_len(256).map(|line| read_line(&text[line.clone()])).collect();
        for (read, line) in parsed.into_iter().zip(&lines) {
            number += 1;
            let bytes = &text[line.clone()];
            // What the store's read of one run refuses among the lines not of the run.
            let written = bytes.starts_with(br#"{"kind":""#) && bytes.trim_ascii_end().ends_with(b"}");
            if bytes.ends_with(b"\n") && !written {
                runs.unwritten.push((number, offset + line.start as u64..offset + line.end as u64));
            }
            runs.fold(read, number, offset + line.start as u64..offset + line.end as u64)?;
        }
        if read == 0 {
            return Ok(runs);
        }
        offset += end as u64;
        buffer.copy_within(end..filled, 0);
        filled -= end;
    }
}

/// One line of the file, read as the store reads it: a step line in the store's shape placed
/// by its head, a fault in it kept for its run; any other line parsed whole, its fault ending
/// the read unless it is a torn last line (no newline).
fn read_line(line: &[u8]) -> LineRead<'_> {
    let ended = line.ends_with(b"\n");
    if let Some(id) = step_head_id(line).filter(|_| ended) {
        let id = std::str::from_utf8(id).map_or_else(|_| String::from_utf8_lossy(id), Cow::Borrowed);
        return match step_line(line) {
            Ok((_, parsed)) => LineRead::Step(id, parsed),
            Err(e) => LineRead::Fault(id, e),
        };
    }
    let parsed = if line.starts_with(STEP_KIND) {
        step_line(line).map(Some)
    } else {
        serde_json::from_slice::<OtherLine>(line).map(|other| match other {
            OtherLine::Step(record) => Some((Cow::Owned(record.run_id.clone()), parsed_of(record))),
            OtherLine::Success(_) | OtherLine::Lock(_) => None,
        })
    };
    match parsed {
        Ok(Some((id, parsed))) => LineRead::Step(id, parsed),
        Ok(None) => LineRead::Nothing,
        // A torn last line from a crash mid-write: it never finished, so it never happened.
        Err(_) if !ended => LineRead::Nothing,
        Err(e) => LineRead::Corrupt(e),
    }
}

/// A step line's run id and step: read in the store's own shape ([`own_shape`]), else
/// parsed whole, as the store parses it.
fn step_line(line: &[u8]) -> Result<(Cow<'_, str>, Parsed<'_>), serde_json::Error> {
    // One check of the line for what a JSON string may not hold: control characters (the
    // newline ends the line) and bytes that are not UTF-8.
    // A line with an escape is left to the parser; in any other, every quote opens or closes
    // a string, found at once.
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let mut quotes = [0u32; 128];
    if body.iter().fold(true, |plain, &b| plain & (b >= 0x20))
        && memchr::memchr(b'\\', body).is_none()
        && let Ok(text) = std::str::from_utf8(body)
        && let Some(count) = quotes_of(body, &mut quotes)
        && let Some((run_id, parsed)) = own_shape(text, &quotes[..count])
    {
        return Ok((Cow::Borrowed(run_id), parsed));
    }
    let record = serde_json::from_slice::<StepRecord>(line)?;
    Ok((Cow::Owned(record.run_id.clone()), parsed_of(record)))
}

/// Where the quotes of `text` are, into `quotes`, eight bytes at a time: how many; `None` when
/// there are more than it holds (or the line is longer than 4 GiB).
fn quotes_of(text: &[u8], quotes: &mut [u32; 128]) -> Option<usize> {
    const LOW: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const QUOTES: u64 = 0x2222_2222_2222_2222;
    u32::try_from(text.len()).ok()?;
    let mut count = 0;
    let mut chunks = text.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // A byte of `t` is 0 where the text has a quote: its top bit set in `found`, exactly.
        let t = u64::from_le_bytes(word) ^ QUOTES;
        let mut found = !(((t & LOW) + LOW) | t | LOW);
        while found != 0 {
            *quotes.get_mut(count)? = (base + found.trailing_zeros() as usize / 8) as u32;
            count += 1;
            found &= found - 1;
        }
        base += 8;
    }
    for (at, &b) in chunks.remainder().iter().enumerate() {
        if b == b'"' {
            *quotes.get_mut(count)? = (base + at) as u32;
            count += 1;
        }
    }
    Some(count)
}

/// What the figures keep of a record parsed whole.
fn parsed_of<'a>(record: StepRecord) -> Parsed<'a> {
    let details = record.details;
    let texts = (is_validate(record.step, &record.component) || !record.status.is_final()).then(|| {
        Box::new(Texts {
            note: details.note,
            error: details.error,
            runner: details.runner,
            runner_process: details.runner_process,
        })
    });
    Parsed {
        component: Cow::Owned(record.component),
        step: record.step,
        status: record.status,
        started_at: record.started_at,
        ended_at: record.ended_at,
        coverage: details.coverage.map(|c| Box::new((c.lines, c.branches))),
        texts,
    }
}

impl Runs {
    /// Folds line `number` (counted from 1) into its run. Where the store's index would stop
    /// the read (a line it cannot place in a run), the error is returned; a fault in a line
    /// placed by its head is kept with its run.
    fn fold(&mut self, read: LineRead, number: u64, place: Range<u64>) -> Result<(), Error> {
        match read {
            LineRead::Step(id, parsed) => {
                let slot = self.slot(&id, &place);
                if self.runs[slot].error.is_none() {
                    let component = self.component_of(slot, &parsed.component);
                    fold(&mut self.runs[slot].held, parsed.with_component(component));
                }
                Ok(())
            }
            LineRead::Fault(id, e) => {
                let slot = self.slot(&id, &place);
                if self.runs[slot].error.is_none() {
                    self.runs[slot].error = Some(Box::new(self.corrupt(number, e)));
                }
                Ok(())
            }
            LineRead::Nothing => Ok(()),
            LineRead::Corrupt(e) => Err(self.corrupt(number, e)),
        }
    }

    fn corrupt(&self, number: u64, error: serde_json::Error) -> Error {
        Error::corrupt(&self.path, format!("line {number}"), error)
    }

    /// A component's place, looked up first among the run's steps (most lines name one).
    fn component_of(&mut self, slot: usize, name: &str) -> u32 {
        let components = &self.components;
        match self.runs[slot].held.iter().find(|h| same(components[h.component as usize].as_bytes(), name.as_bytes())) {
            Some(held) => held.component,
            None => self.component(name),
        }
    }

    fn component(&mut self, name: &str) -> u32 {
        if let Some(&slot) = self.component_slots.get(name) {
            return slot;
        }
        let slot = self.components.len() as u32;
        self.components.push(name.into());
        self.component_slots.insert(name.into(), slot);
        slot
    }

    /// The place of run `id`, a new one at the end for a run not seen before.
    /// The place of run `id`, a new one at the end for a run not seen before; `place` (where
    /// the line is in the file) extends where its lines are.
    fn slot(&mut self, id: &str, place: &Range<u64>) -> usize {
        let slot = match self.last {
            Some(last) if same(self.runs[last].id.as_bytes(), id.as_bytes()) => last,
            _ => match self.slots.get(id) {
                Some(&slot) => slot,
                None => {
                    self.slots.insert(id.into(), self.runs.len());
                    self.runs.push(Run { id: id.into(), held: Vec::new(), error: None, lines: place.clone() });
                    self.runs.len() - 1
                }
            },
        };
        self.runs[slot].lines.end = place.end;
        self.last = Some(slot);
        slot
    }

    /// The newest run (the last first seen), as [`Store::run_ids`](run_state::Store::run_ids)
    /// ends.
    pub(crate) fn newest(&self) -> Option<&str> {
        self.runs.last().map(|r| &*r.id)
    }

    /// The records of run `id` as [`Store::run`](run_state::Store::run) reads them (its latest
    /// state of each step, in pipeline order, a dead runner's step failed), parsed whole from
    /// its lines' part of the file; none for a run the file does not hold.
    pub(crate) fn records(&self, id: &str) -> Result<Vec<StepRecord>, Error> {
        use std::io::{BufRead, Seek};
        let mut file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        file.lock_shared().map_err(|e| Error::io(&self.path, e))?;
        let finder = memchr::memmem::Finder::new(id.as_bytes());
        for (number, place) in &self.unwritten {
            use std::os::unix::fs::FileExt;
            let mut line = vec![0; (place.end - place.start) as usize];
            file.read_exact_at(&mut line, place.start).map_err(|e| Error::io(&self.path, e))?;
            if finder.find(&line).is_none() {
                let message = format!("line {number}: not a record this store wrote");
                return Err(Error::Corrupt { path: self.path.clone(), message, source: None });
            }
        }
        let Some(&slot) = self.slots.get(id) else { return Ok(Vec::new()) };
        let lines = &self.runs[slot].lines;
        file.seek(std::io::SeekFrom::Start(lines.start)).map_err(|e| Error::io(&self.path, e))?;
        let mut reader = std::io::BufReader::new(file.take(lines.end - lines.start));
        let (mut line, mut latest) = (Vec::new(), Vec::<StepRecord>::new());
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(|e| Error::io(&self.path, e))? == 0 {
                break;
            }
            // Only a line holding the id can be one of its records (as the store looks for them).
            if finder.find(&line).is_none() {
                continue;
            }
            let record = if line.starts_with(STEP_KIND) {
                serde_json::from_slice::<StepRecord>(&line).ok()
            } else {
                match serde_json::from_slice::<OtherLine>(&line) {
                    Ok(OtherLine::Step(record)) => Some(record),
                    _ => None,
                }
            };
            // The visit read every line, so a line that does not parse here is a torn last one.
            let Some(record) = record.filter(|r| r.run_id == id) else { continue };
            match latest.iter().position(|s| s.step == record.step && s.component == record.component) {
                Some(at) => {
                    let current = latest.swap_remove(at);
                    latest.push(run_state::merge_later(current, record));
                }
                None => latest.push(record),
            }
        }
        latest.sort_by(|a, b| (a.step, &a.component).cmp(&(b.step, &b.component)));
        Ok(latest.into_iter().map(StepRecord::with_dead_runner_failed).collect())
    }

    /// Hands each run (its id and its steps' facts) to `each`, oldest first, as
    /// [`Store::for_each_run`](run_state::Store::for_each_run) would; the error of the first
    /// run with a line that does not parse ends the visit.
    pub(crate) fn visit(self, mut each: impl FnMut(&str, &[Fact])) -> Result<(), Error> {
        let components = self.components;
        for run in self.runs {
            if let Some(error) = run.error {
                return Err(*error);
            }
            let held: Vec<Held> = run.held.into_iter().map(Held::with_dead_runner_failed).collect();
            let facts: Vec<Fact> = held
                .iter()
                .map(|h| {
                    let component = &*components[h.component as usize];
                    Fact {
                        component,
                        step: h.step,
                        status: h.status,
                        started_at: h.started_at,
                        ended_at: h.ended_at,
                        coverage: h.coverage.as_deref().copied(),
                        findings: h
                            .texts
                            .as_deref()
                            .filter(|_| is_validate(h.step, component))
                            .and_then(|t| t.note.as_deref().or(t.error.as_deref()))
                            .and_then(findings_of),
                    }
                })
                .collect();
            each(&run.id, &facts);
        }
        Ok(())
    }
}

/// Folds one more step of a run into its steps (one a step and component).
fn fold(steps: &mut Vec<Held>, later: Held) {
    match steps.iter_mut().find(|s| s.step == later.step && s.component == later.component) {
        Some(current) => current.merge(later),
        None => steps.push(later),
    }
}
