//! The records a run is made of.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A pipeline step, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Resolve the commit to build.
    Source,
    /// Work out what changed.
    Diff,
    /// Lint and check.
    Validate,
    /// Build and package.
    Build,
    /// Run tests.
    Test,
    /// Deploy to the test environment.
    Deploy,
    /// Wait for a human.
    Approval,
    /// End-to-end tests.
    E2e,
    /// Dynamic security tests.
    Dast,
    /// Deploy to production.
    ProdDeploy,
    /// The site checked again where it was promoted (the `dast` of a promoted environment:
    /// one step per environment, so a store that never overwrites a finished step keeps both).
    ProdDast,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Planned, not started.
    Pending,
    /// Started, not finished.
    Running,
    /// Finished well.
    Passed,
    /// Finished badly.
    Failed,
    /// Not needed for this change.
    Skipped,
    /// Stopped before it finished.
    Cancelled,
}

impl Status {
    /// Whether the step has ended, one way or another.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Pending | Status::Running)
    }

    /// Whether the step ran to a result: passed, failed or cancelled. A skip (a preview, a
    /// step nothing required) ended without one.
    pub fn is_result(self) -> bool {
        matches!(self, Status::Passed | Status::Failed | Status::Cancelled)
    }
}

/// What a later record of the same run, component and step does to the one readers see now
/// ([`supersede`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supersede {
    /// The later record is the step's state from now on.
    Replace,
    /// The current record stays: it is a result and the later one is weaker (a skip, a preview,
    /// a rerun not finished yet). A later skip is kept beside it, in its note.
    Keep,
}

/// The rule both stores follow (pure): a finished step is never replaced by a weaker record.
/// A result (passed, failed, cancelled) is replaced only by another result, so a failure stays
/// a failure until a real run of the same step passes, and a later preview or skip never turns
/// a failed or passed step into a skipped one; anything else (running → passed, skipped →
/// running, pending → passed) replaces as recorded.
pub fn supersede(current: &StepRecord, later: &StepRecord) -> Supersede {
    if current.status.is_result() && !later.status.is_result() { Supersede::Keep } else { Supersede::Replace }
}

/// What a note says of a later skip kept beside a result ([`merge_later`]).
const LATER_SKIP: &str = " | later skipped: ";

/// The record readers see once `later` is recorded after `current` ([`supersede`]): `later`
/// itself, or `current` with a later skip's reason kept in its note (the newest skip only).
pub fn merge_later(mut current: StepRecord, later: StepRecord) -> StepRecord {
    match supersede(&current, &later) {
        Supersede::Replace => later,
        Supersede::Keep if later.status == Status::Skipped => {
            let note = current.details.note.as_deref().unwrap_or_default();
            let base = if note.starts_with(LATER_SKIP.trim_start_matches(" | ")) {
                ""
            } else {
                note.split_once(LATER_SKIP).map_or(note, |(base, _)| base)
            };
            let why = later.details.note.or(later.details.error).unwrap_or_else(|| "no reason given".into());
            current.details.note = Some(if base.is_empty() {
                format!("{}{why}", LATER_SKIP.trim_start_matches(" | "))
            } else {
                format!("{base}{LATER_SKIP}{why}")
            });
            current
        }
        Supersede::Keep => current,
    }
}

macro_rules! text_enum {
    ($ty:ty, $what:literal, $($variant:ident = $text:literal),+ $(,)?) => {
        impl $ty {
            /// Every value, in order.
            pub const ALL: &'static [$ty] = &[$(<$ty>::$variant),+];

            /// The name used in files and on the command line.
            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $text),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(<$ty>::$variant),)+
                    _ => Err(format!(concat!("unknown ", $what, " `{}`; expected one of: {}"), s, [$($text),+].join(", "))),
                }
            }
        }
    };
}

text_enum!(
    Step,
    "step",
    Source = "source",
    Diff = "diff",
    Validate = "validate",
    Build = "build",
    Test = "test",
    Deploy = "deploy",
    Approval = "approval",
    E2e = "e2e",
    Dast = "dast",
    ProdDeploy = "prod-deploy",
    ProdDast = "prod-dast"
);
text_enum!(
    Status,
    "status",
    Pending = "pending",
    Running = "running",
    Passed = "passed",
    Failed = "failed",
    Skipped = "skipped",
    Cancelled = "cancelled"
);

/// The component name of steps that concern the whole pipeline rather than one component.
pub const PIPELINE: &str = "pipeline";

/// The state of one step of one component in one run. Recording it again replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The run.
    pub run_id: String,
    /// The commit the run builds.
    pub commit: String,
    /// The component, or [`PIPELINE`].
    pub component: String,
    /// The step.
    pub step: Step,
    /// Where it is.
    pub status: Status,
    /// When it started.
    #[serde(default, with = "time_opt")]
    pub started_at: Option<SystemTime>,
    /// When it ended.
    #[serde(default, with = "time_opt")]
    pub ended_at: Option<SystemTime>,
    /// What a reader needs to act on it.
    #[serde(default)]
    pub details: Details,
}

/// Free-form details of a step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    /// Why it failed, on one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The end of its log, secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    /// Where its full log is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// A short note (why it was skipped, the base of a diff …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who runs a pending or running step: `HOST:PID` of the process that will record its end,
    /// so a reader can tell a step whose runner died from one still running
    /// ([`StepRecord::runner_died`]). Unset for steps recorded by a short-lived command
    /// (`status-report record`), whose end some other process records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// Which process exactly `runner` is: its pid namespace and start time (`pid:[N]/TICKS`,
    /// from `/proc`), so a reused pid, or a pid of another container with the same host name,
    /// is not taken for the runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_process: Option<String>,
    /// Who decided the step, for steps a person decides (an approval or a refusal of
    /// `approval`: the approver's name). Boxed to keep records small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Box<String>>,
    /// The coverage figures of a test step whose command has `coverage = { … }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Box<Coverage>>,
    /// What production will receive, part by part, as the approver was shown it (the
    /// `approval` step): the deploys after it compare their own parts and refuse any change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Box<crate::ReleaseDigest>>,
}

/// `covered` of `total` (lines, branches or changed lines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ratio {
    /// How many were executed.
    pub covered: u64,
    /// How many there are.
    pub total: u64,
}

impl Ratio {
    /// The share in percent; `None` when there is nothing to cover.
    pub fn percent(self) -> Option<f64> {
        (self.total > 0).then(|| self.covered as f64 * 100.0 / self.total as f64)
    }

    /// Whether the share reaches `min` percent (nothing to cover reaches any minimum).
    pub fn reaches(self, min: f64) -> bool {
        self.total == 0 || self.covered as f64 * 100.0 >= min * self.total as f64
    }

    /// `84.1% (90/107)`, rounded down so a figure under the minimum never prints as the minimum;
    /// `n/a (0/0)` when there is nothing to cover.
    pub fn describe(self) -> String {
        match self.percent() {
            Some(p) => format!("{}% ({}/{})", percent_text(p), self.covered, self.total),
            None => "n/a (0/0)".into(),
        }
    }
}

/// A percentage with at most one decimal, rounded down (`84.1`, `80`, `0`).
pub fn percent_text(p: f64) -> String {
    let tenths = (p * 10.0 + 1e-9).floor() / 10.0;
    if tenths.fract() == 0.0 { format!("{tenths:.0}") } else { format!("{tenths:.1}") }
}

/// One file's line coverage, as the report lists the files furthest below the minimum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCoverage {
    /// Repo-relative path.
    pub path: String,
    /// Its lines.
    pub lines: Ratio,
    /// False when no coverage report mentions it (it counts as 0%).
    #[serde(default = "yes")]
    pub reported: bool,
}

fn yes() -> bool {
    true
}

/// The coverage of one component's files, read after its test step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// The report it was read from, repo-relative.
    pub report: String,
    /// Lines of the component's source files.
    pub lines: Ratio,
    /// Branches, when the report has branch data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<Ratio>,
    /// Changed lines (of the run's diff) the tests executed, when a minimum asks for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_lines: Option<Ratio>,
    /// The minimum for `lines`, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lines: Option<f64>,
    /// The minimum for `branches`, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_branches: Option<f64>,
    /// The minimum for `changed_lines`, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_changed_lines: Option<f64>,
    /// The files with the lowest line coverage, lowest first (at most [`Coverage::MAX_FILES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileCoverage>,
    /// How many of the component's source files no report mentions (each counted as 0%).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreported: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

// The minimums are checked finite (0 to 100) when the config is read.
impl Eq for Coverage {}

impl Coverage {
    /// How many files [`Coverage::files`] keeps.
    pub const MAX_FILES: usize = 10;

    /// Every figure on one line: `lines 84.1% (90/107) ≥ 80%, branches 80.7% (21/26)`.
    pub fn summary(&self) -> String {
        let figure = |name: &str, ratio: Ratio, min: Option<f64>| {
            let mut text = format!("{name} {}", ratio.describe());
            if let Some(min) = min {
                let sign = if ratio.reaches(min) { "≥" } else { "<" };
                text.push_str(&format!(" {sign} {}%", percent_text(min)));
            }
            text
        };
        let mut parts = vec![figure("lines", self.lines, self.min_lines)];
        if let Some(branches) = self.branches {
            parts.push(figure("branches", branches, self.min_branches));
        }
        if let Some(changed) = self.changed_lines {
            parts.push(figure("changed lines", changed, self.min_changed_lines));
        }
        parts.join(", ")
    }

    /// The files below the line minimum (all listed files when none is set), lowest first.
    pub fn files_below(&self) -> impl Iterator<Item = &FileCoverage> {
        let min = self.min_lines.unwrap_or(100.0);
        self.files.iter().filter(move |f| !f.lines.reaches(min))
    }
}

impl Details {
    /// Names this process as the runner of the step ([`Details::runner`]). Leaves both fields
    /// unset where `/proc` cannot say who this process is, so no reader can take it for dead.
    pub fn set_runner_to_this_process(&mut self) {
        let pid = std::process::id();
        match (this_host(), process_identity(pid)) {
            (Some(host), Some(identity)) => {
                self.runner = Some(format!("{host}:{pid}"));
                self.runner_process = Some(identity);
            }
            _ => {
                self.runner = None;
                self.runner_process = None;
            }
        }
    }
}

impl StepRecord {
    /// A record for `component`/`step` of a run, with no times or details yet.
    pub fn new(run_id: &str, commit: &str, component: &str, step: Step, status: Status) -> StepRecord {
        StepRecord {
            run_id: run_id.into(),
            commit: commit.into(),
            component: component.into(),
            step,
            status,
            started_at: None,
            ended_at: None,
            details: Details::default(),
        }
    }

    /// Why a pending or running step will never end: its runner process, on this host and in
    /// this pid namespace, no longer exists (`runner died (pid N on HOST)`). `None` when the
    /// step has ended, names no runner, or its runner is alive or cannot be checked from here
    /// (another host or container, no `/proc`): "cannot tell" never counts as dead.
    pub fn runner_died(&self) -> Option<String> {
        if self.status.is_final() {
            return None;
        }
        process_died(self.details.runner.as_deref()?, self.details.runner_process.as_deref()?)
    }

    /// The record as a reader should see it: a pending or running step whose runner died
    /// ([`StepRecord::runner_died`]) is failed with that error; any other record as it is.
    pub fn with_dead_runner_failed(mut self) -> StepRecord {
        if let Some(error) = self.runner_died() {
            self.status = Status::Failed;
            self.details.error = Some(error);
        }
        self
    }

    /// How long it ran, when it has both times.
    pub fn duration(&self) -> Option<std::time::Duration> {
        self.ended_at?.duration_since(self.started_at?).ok()
    }
}

/// This process as [`Details::runner`] and [`Details::runner_process`] name one (`HOST:PID`,
/// `NAMESPACE/START`), when `/proc` says.
pub fn this_process() -> Option<(String, String)> {
    let pid = std::process::id();
    Some((format!("{}:{pid}", this_host()?), process_identity(pid)?))
}

/// `runner died (pid N on HOST)` when the process named `runner` (`HOST:PID`) with the
/// identity `process` (`NAMESPACE/START`) is provably gone: on this host, in this pid
/// namespace, and its pid free, a zombie or another process. `None` when it is alive or cannot
/// be checked from here: "cannot tell" never counts as dead.
pub fn process_died(runner: &str, process: &str) -> Option<String> {
    let (host, pid) = runner.rsplit_once(':')?;
    let pid: u32 = pid.parse().ok()?;
    let (namespace, _) = process.split_once('/')?;
    if this_host()? != host || pid_namespace()? != namespace {
        return None;
    }
    let alive = match read_stat(pid) {
        ProcState::Gone => false,
        ProcState::Unknown => return None,
        ProcState::Zombie => false,
        ProcState::Alive { start } => process_identity_from(namespace, start) == process,
    };
    (!alive).then(|| format!("runner died (pid {pid} on {host})"))
}

/// This machine's host name (`/proc/sys/kernel/hostname`).
fn this_host() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && !name.contains(':')).then(|| name.to_string())
}

/// This process's pid namespace (`pid:[4026531836]`).
fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    link.to_str().map(str::to_string)
}

/// `NAMESPACE/START` of a process of this namespace, from `/proc`.
pub(crate) fn process_identity(pid: u32) -> Option<String> {
    match read_stat(pid) {
        ProcState::Alive { start } => Some(process_identity_from(&pid_namespace()?, start)),
        _ => None,
    }
}

fn process_identity_from(namespace: &str, start: u64) -> String {
    format!("{namespace}/{start}")
}

/// What `/proc/PID/stat` says of a process.
enum ProcState {
    /// No such process.
    Gone,
    /// Ended, not yet reaped: it will never record anything again.
    Zombie,
    /// Running, started `start` clock ticks after boot.
    Alive { start: u64 },
    /// `/proc` could not be read or parsed.
    Unknown,
}

fn read_stat(pid: u32) -> ProcState {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        // Only a missing entry in a mounted /proc means gone.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::path::Path::new("/proc/self/stat").exists() => {
            return ProcState::Gone;
        }
        Err(_) => return ProcState::Unknown,
    };
    // `PID (COMM) STATE PPID …`: the command may hold spaces and parentheses, so fields are
    // counted after the last `)`; the start time is field 22, the 20th after it.
    let Some((_, fields)) = stat.rsplit_once(')') else { return ProcState::Unknown };
    let fields: Vec<&str> = fields.split_whitespace().collect();
    match (fields.first(), fields.get(19).and_then(|s| s.parse().ok())) {
        (Some(&("Z" | "X" | "x")), _) => ProcState::Zombie,
        (Some(_), Some(start)) => ProcState::Alive { start },
        _ => ProcState::Unknown,
    }
}

/// RFC 3339 timestamps in files, so people can read them.
pub(crate) mod time_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}
