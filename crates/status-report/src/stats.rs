//! Trends over many runs: executions per day, success rates, durations (average and P95) per
//! stage and for the whole run, approval waits, lead time, the slowest components, coverage
//! per component over time, validate's findings over time, and the regression alerts of
//! `status-report stats --check`.
//!
//! Pure: records in, figures out. [`Collector`] takes one run at a time and keeps only what
//! the figures need (a count per day, one duration per stage and run, one coverage figure per
//! component and day, the last [`StatsPolicy::window`] runs for the alerts), never the records,
//! so its memory grows with the number of runs in the window, not with the size of the store.
//! [`from_store`] feeds it [`Store::for_each_run`] in one pass.
//!
//! What the store does not keep is not guessed: a commit's own time (the lead time starts when
//! the run's first step started), zip sizes (in each run folder's `packages/manifest.json`),
//! findings by rule or severity and dependency advisories (in `validate.json`).
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use run_state::{PIPELINE, Status, Step, StepRecord};
//! use status_report::stats::{Collector, Query, StatsPolicy};
//!
//! let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let mut collector = Collector::new(Query::default(), StatsPolicy::default());
//! for (run, secs) in [("r1", 60), ("r2", 120)] {
//!     let mut test = StepRecord::new(run, "abc", "api", Step::Test, Status::Passed);
//!     test.started_at = Some(at);
//!     test.ended_at = Some(at + Duration::from_secs(secs));
//!     collector.add(run, &[test]);
//! }
//! let stats = collector.finish();
//! assert_eq!(stats.runs.total, 2);
//! let test = stats.stages.iter().find(|s| s.step == Step::Test).unwrap();
//! assert_eq!((test.duration.average_secs, test.duration.p95_secs), (Some(90.0), Some(120.0)));
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::time::{Duration, SystemTime};

use pipeline_config::{ConfigError, ConfigFile, Spanned};
use run_state::{FileStore, PIPELINE, Ratio, Status, Step, StepRecord, Store, percent_text};
use serde::{Deserialize, Serialize};

use crate::{GatePolicy, format_duration};

/// What went wrong computing the figures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--since` is not a duration.
    #[error("--since `{text}` is not a duration; write e.g. 30d, 12h or 2weeks")]
    Since {
        /// What was given.
        text: String,
        /// Why it does not parse.
        #[source]
        source: humantime::DurationError,
    },
    /// The store could not be read.
    #[error("cannot read the runs from the store")]
    Store(#[source] run_state::Error),
}

/// Parses `--since` (`30d`, `12h`, `2weeks`): how far back from now the figures look.
pub fn parse_since(text: &str) -> Result<Duration, Error> {
    humantime::parse_duration(text.trim()).map_err(|source| Error::Since { text: text.into(), source })
}

/// `[stats]`: the thresholds of `status-report stats --check`. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsSettings {
    /// How many earlier runs the P95 and the success rates are taken over (default 20).
    #[serde(default)]
    pub window: Option<Spanned<usize>>,
    /// The fewest earlier runs with a figure before a duration or rate is judged (default 5).
    #[serde(default)]
    pub min_runs: Option<Spanned<usize>>,
    /// A stage is slow when the last run's duration exceeds its P95 times this (default 1.5).
    #[serde(default)]
    pub duration_factor: Option<Spanned<f64>>,
    /// A stage (or the whole run) fails too often below this success rate, in percent (default 80).
    #[serde(default)]
    pub min_success_rate: Option<Spanned<f64>>,
    /// A component's line coverage may fall by at most this many points from its previous
    /// figure (default 0: any drop).
    #[serde(default)]
    pub max_coverage_drop: Option<Spanned<f64>>,
}

/// The thresholds, checked ([`StatsSettings::policy`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsPolicy {
    /// [`StatsSettings::window`].
    pub window: usize,
    /// [`StatsSettings::min_runs`].
    pub min_runs: usize,
    /// [`StatsSettings::duration_factor`].
    pub duration_factor: f64,
    /// [`StatsSettings::min_success_rate`], in percent.
    pub min_success_rate: f64,
    /// [`StatsSettings::max_coverage_drop`], in percentage points.
    pub max_coverage_drop: f64,
}

impl Default for StatsPolicy {
    fn default() -> StatsPolicy {
        StatsPolicy { window: 20, min_runs: 5, duration_factor: 1.5, min_success_rate: 80.0, max_coverage_drop: 0.0 }
    }
}

impl StatsSettings {
    /// The section's name in `pipeline.toml`.
    pub const SECTION: &'static str = "stats";

    /// Reads `[stats]` (absent: the defaults) and checks its values, each mistake naming the
    /// key and its line.
    pub fn policy(config: &ConfigFile) -> Result<StatsPolicy, ConfigError> {
        let settings: StatsSettings = config.section(Self::SECTION)?;
        let defaults = StatsPolicy::default();
        let bad = |span: std::ops::Range<usize>, key: &str, message: &str| {
            ConfigError::at(&config.path, &config.text, span, format!("stats.{key}"), message)
        };
        let count = |value: &Option<Spanned<usize>>, key: &str, default: usize, max: usize| match value {
            None => Ok(default),
            Some(v) if (1..=max).contains(v.get_ref()) => Ok(*v.get_ref()),
            Some(v) => Err(bad(v.span(), key, &format!("must be 1 to {max}"))),
        };
        let real =
            |value: &Option<Spanned<f64>>, key: &str, default: f64, range: std::ops::RangeInclusive<f64>| match value {
                None => Ok(default),
                Some(v) if range.contains(v.get_ref()) => Ok(*v.get_ref()),
                Some(v) => Err(bad(v.span(), key, &format!("must be {} to {}", range.start(), range.end()))),
            };
        Ok(StatsPolicy {
            window: count(&settings.window, "window", defaults.window, 10_000)?,
            min_runs: count(&settings.min_runs, "min_runs", defaults.min_runs, 10_000)?,
            duration_factor: real(&settings.duration_factor, "duration_factor", defaults.duration_factor, 1.0..=100.0)?,
            min_success_rate: real(
                &settings.min_success_rate,
                "min_success_rate",
                defaults.min_success_rate,
                0.0..=100.0,
            )?,
            max_coverage_drop: real(
                &settings.max_coverage_drop,
                "max_coverage_drop",
                defaults.max_coverage_drop,
                0.0..=100.0,
            )?,
        })
    }
}

/// Which runs count and what the lead time is measured to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only runs that started at or after this time (runs without any time are left out then).
    pub since: Option<SystemTime>,
    /// Only runs that recorded this step with a result: an environment's deploy step
    /// (`--env E`: `deploy`, or `prod-deploy` for a promoted environment).
    pub only_step: Option<Step>,
    /// The environment's name, for the report.
    pub env: Option<String>,
    /// The deploy step the lead time ends at (production's: `prod-deploy` when an environment
    /// is promoted, else `deploy`). `None`: `prod-deploy`.
    pub lead_step: Option<Step>,
}

impl Query {
    /// The query of `stats [--since DURATION] [--env E]` at `now`: `--env` selects the runs that
    /// recorded E's deploy step ([`GatePolicy::deploy_step`]) and ends the lead time there;
    /// without it the lead time ends at production's (`prod-deploy` when `[gate]` promotes an
    /// environment, else `deploy`).
    pub fn new(since: Option<&str>, env: Option<&str>, gate: &GatePolicy, now: SystemTime) -> Result<Query, Error> {
        let since = since.map(parse_since).transpose()?.map(|d| now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH));
        let promoted = gate.environments.values().any(|rule| rule.after.is_some());
        let lead_step = match env {
            Some(env) => gate.deploy_step(env),
            None if promoted => Step::ProdDeploy,
            None => Step::Deploy,
        };
        Ok(Query {
            since,
            only_step: env.map(|env| gate.deploy_step(env)),
            env: env.map(str::to_string),
            lead_step: Some(lead_step),
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every step passed or was skipped.
    Passed,
    /// A step failed or was cancelled.
    Failed,
    /// A step is still pending or running (an approval waiting, say).
    Unfinished,
}

/// Counts of runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Every run counted.
    pub total: u64,
    /// Passed.
    pub passed: u64,
    /// Failed or cancelled.
    pub failed: u64,
    /// Still pending or running.
    pub unfinished: u64,
    /// Passed of finished, in percent; `None` with no finished run.
    pub success_rate: Option<f64>,
}

impl Counts {
    fn add(&mut self, outcome: Outcome) {
        self.total += 1;
        match outcome {
            Outcome::Passed => self.passed += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Unfinished => self.unfinished += 1,
        }
        self.success_rate = rate(self.passed, self.failed);
    }
}

fn rate(passed: u64, failed: u64) -> Option<f64> {
    (passed + failed > 0).then(|| passed as f64 * 100.0 / (passed + failed) as f64)
}

/// The runs of one day (UTC) or one week (starting Monday).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    /// `2026-12-04` (a week: its Monday).
    pub start: String,
    /// Its runs.
    #[serde(flatten)]
    pub counts: Counts,
}

/// Average and P95 of some durations, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// How many durations.
    pub count: usize,
    /// Their average.
    pub average_secs: Option<f64>,
    /// Their 95th percentile (nearest rank).
    pub p95_secs: Option<f64>,
    /// The longest.
    pub max_secs: Option<f64>,
}

impl Figures {
    fn of(millis: &[u64]) -> Figures {
        if millis.is_empty() {
            return Figures::default();
        }
        let sum: u128 = millis.iter().map(|&m| u128::from(m)).sum();
        Figures {
            count: millis.len(),
            average_secs: Some(sum as f64 / millis.len() as f64 / 1000.0),
            p95_secs: p95(millis).map(|m| m as f64 / 1000.0),
            max_secs: millis.iter().max().map(|&m| m as f64 / 1000.0),
        }
    }
}

/// The 95th percentile by nearest rank: the smallest value at least 95% of the values reach.
pub fn p95(values: &[u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (sorted.len() * 95).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

fn secs(value: f64) -> String {
    format_duration(Duration::from_secs_f64(value.max(0.0)))
}

/// One stage (step) over the runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageStats {
    /// The step.
    pub step: Step,
    /// Runs where it passed (every component).
    pub passed: u64,
    /// Runs where it failed or was cancelled (any component).
    pub failed: u64,
    /// Runs where it was only skipped.
    pub skipped: u64,
    /// Passed of passed and failed, in percent.
    pub success_rate: Option<f64>,
    /// Its span in each run (first start to last end of its records).
    pub duration: Figures,
}

/// One component's time over the runs (the sum of its steps' durations in each run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentTime {
    /// The component.
    pub component: String,
    /// Its time per run.
    pub duration: Figures,
}

/// One coverage figure (the day's last).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoveragePoint {
    /// The day (UTC).
    pub day: String,
    /// The run it comes from.
    pub run_id: String,
    /// Line coverage, in percent.
    pub lines: Option<f64>,
    /// Branch coverage, in percent, when reported.
    pub branches: Option<f64>,
}

/// A component's coverage over time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoverageTrend {
    /// The component.
    pub component: String,
    /// One point per day, oldest first.
    pub points: Vec<CoveragePoint>,
}

/// Validate's findings of a day's last run that recorded them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingsPoint {
    /// The day (UTC).
    pub day: String,
    /// The run.
    pub run_id: String,
    /// Every finding.
    pub findings: u64,
    /// Those at or above the failing severity.
    pub failing: u64,
}

/// The figures of a set of runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Only runs since (RFC 3339), when asked.
    pub since: Option<String>,
    /// Only runs that deployed to this environment, when asked.
    pub env: Option<String>,
    /// Every run counted.
    pub runs: Counts,
    /// Runs left out because they carry no time while `--since` was asked.
    pub undated: u64,
    /// Runs per day (UTC), oldest first.
    pub per_day: Vec<Period>,
    /// Runs per week (from Monday), oldest first.
    pub per_week: Vec<Period>,
    /// The whole run: first start to last end less the wait for approval, of finished runs.
    pub run_duration: Figures,
    /// Each stage.
    pub stages: Vec<StageStats>,
    /// From the approval's request to its decision.
    pub approval_wait: Figures,
    /// Approvals still waiting.
    pub approvals_waiting: u64,
    /// The step the lead time ends at.
    pub lead_step: Step,
    /// From the run's first start to the end of `lead_step` passed (the commit's own time is
    /// not recorded).
    pub lead_time: Figures,
    /// The components with the longest P95, longest first (at most 10).
    pub slowest_components: Vec<ComponentTime>,
    /// Coverage per component, from the test steps' coverage figures.
    pub coverage: Vec<CoverageTrend>,
    /// Validate's findings per day, from its records.
    pub findings: Vec<FindingsPoint>,
    /// The last runs, oldest first, for the alerts.
    #[serde(skip)]
    pub recent: Vec<RunFigures>,
    /// Each component's last two coverage figures: (run, lines %) before, and now.
    #[serde(skip)]
    pub coverage_last: BTreeMap<String, LastCoverage>,
}

/// A component's line coverage in the last run that measured it, and in the run before: (run,
/// percent).
pub type LastCoverage = (Option<(String, f64)>, (String, f64));

/// One table of the text and Markdown renderings: title, header, rows.
type Table = (&'static str, Vec<&'static str>, Vec<Vec<String>>);

/// What the alerts need of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFigures {
    /// The run.
    pub run_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Its whole duration, when finished, in milliseconds.
    pub duration: Option<u64>,
    /// Each stage's result (`None`: only skipped) and span in milliseconds.
    pub stages: BTreeMap<Step, (Option<bool>, Option<u64>)>,
}

/// One stage (step) of one run, over its components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageResult {
    /// `Some(false)` when a component failed or was cancelled, `Some(true)` when every record
    /// ended and one passed, `None` otherwise (only skipped, or not finished).
    pub result: Option<bool>,
    /// Whether every record of the stage is a skip.
    pub skipped: bool,
    /// First start to last end of the records that ran, in milliseconds, once all ended. Never
    /// for the approval, whose span is a person's wait ([`Stats::approval_wait`]).
    pub span: Option<u64>,
    /// When its last record ended.
    pub ended: Option<SystemTime>,
}

/// What the figures take of one step record: [`Fact::of`] a record, or the file store's own
/// read of a line ([`crate::scan`]), which keeps no logs, commits or notes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fact<'a> {
    /// The component, or [`PIPELINE`].
    pub component: &'a str,
    /// The step.
    pub step: Step,
    /// Where it is.
    pub status: Status,
    /// When it started.
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub ended_at: Option<SystemTime>,
    /// Its line and branch coverage, when recorded.
    pub coverage: Option<(Ratio, Option<Ratio>)>,
    /// Validate's findings (its note's, else its error's: [`findings_of`]); only read for
    /// the pipeline's validate step.
    pub findings: Option<(u64, u64)>,
}

impl<'a> Fact<'a> {
    /// What the figures take of `record`.
    pub(crate) fn of(record: &'a StepRecord) -> Fact<'a> {
        let details = &record.details;
        Fact {
            component: &record.component,
            step: record.step,
            status: record.status,
            started_at: record.started_at,
            ended_at: record.ended_at,
            coverage: details.coverage.as_deref().map(|c| (c.lines, c.branches)),
            findings: is_validate(record.step, &record.component)
                .then(|| details.note.as_deref().or(details.error.as_deref()).and_then(findings_of))
                .flatten(),
        }
    }

    /// How long it ran, when it has both times ([`StepRecord::duration`]).
    fn duration(&self) -> Option<Duration> {
        self.ended_at?.duration_since(self.started_at?).ok()
    }
}

/// Whether a record is the pipeline's validate step, whose note counts its findings.
pub(crate) fn is_validate(step: Step, component: &str) -> bool {
    step == Step::Validate && component == PIPELINE
}

/// Each stage of one run (pure), in pipeline order.
pub fn stage_results(records: &[StepRecord]) -> BTreeMap<Step, StageResult> {
    let facts: Vec<Fact> = records.iter().map(Fact::of).collect();
    stages_of(&facts)
}

/// [`stage_results`] of the facts of a run's records, in one pass over them.
fn stages_of(records: &[Fact]) -> BTreeMap<Step, StageResult> {
    /// What one pass keeps of a stage's records.
    #[derive(Default)]
    struct Seen {
        any: bool,
        failed: bool,
        passed: bool,
        all_final: bool,
        all_skipped: bool,
        ended: Option<SystemTime>,
        ran_from: Option<SystemTime>,
        ran_to: Option<SystemTime>,
        ran_final: bool,
    }
    let mut seen: [Seen; Step::ALL.len()] = Default::default();
    for record in records {
        let stage = &mut seen[record.step as usize];
        if !stage.any {
            *stage = Seen { any: true, all_final: true, all_skipped: true, ran_final: true, ..Seen::default() };
        }
        let status = record.status;
        stage.failed |= matches!(status, Status::Failed | Status::Cancelled);
        stage.passed |= status == Status::Passed;
        stage.all_final &= status.is_final();
        stage.all_skipped &= status == Status::Skipped;
        if status.is_final() {
            stage.ended = stage.ended.max(record.ended_at);
        }
        if status != Status::Skipped {
            stage.ran_to = stage.ran_to.max(record.ended_at);
            stage.ran_from = match (stage.ran_from, record.started_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            stage.ran_final &= status.is_final();
        }
    }
    let mut stages = BTreeMap::new();
    for (step, stage) in Step::ALL.iter().zip(seen) {
        if !stage.any {
            continue;
        }
        let result = if stage.failed {
            Some(false)
        } else if stage.passed && stage.all_final {
            Some(true)
        } else {
            None
        };
        let span = match (stage.ran_from, stage.ran_to) {
            (Some(from), Some(to)) if *step != Step::Approval && stage.ran_final => Some(millis(from, to)),
            _ => None,
        };
        stages.insert(*step, StageResult { result, skipped: stage.all_skipped, span, ended: stage.ended });
    }
    stages
}

/// Builds [`Stats`] one run at a time.
#[derive(Debug)]
pub struct Collector {
    query: Query,
    policy: StatsPolicy,
    runs: Counts,
    undated: u64,
    days: BTreeMap<String, Counts>,
    weeks: BTreeMap<String, Counts>,
    run_durations: Vec<u64>,
    stages: BTreeMap<Step, (u64, u64, u64, Vec<u64>)>,
    approval_waits: Vec<u64>,
    approvals_waiting: u64,
    lead_times: Vec<u64>,
    components: BTreeMap<String, Vec<u64>>,
    coverage: BTreeMap<String, BTreeMap<String, CoveragePoint>>,
    coverage_last: BTreeMap<String, LastCoverage>,
    findings: BTreeMap<String, FindingsPoint>,
    recent: VecDeque<RunFigures>,
    /// The last day asked of [`Collector::day`]: its number since 1970, and its text.
    last_day: Option<(u64, String)>,
    /// The last week counted: its Monday's number since 1970, and its text.
    last_week: Option<(u64, String)>,
}

fn millis(from: SystemTime, to: SystemTime) -> u64 {
    to.duration_since(from).map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// `2026-12-04` of a time (UTC).
fn day_of(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()[..10].to_string()
}

/// The text of `number` (a day's), from `cache` when it holds the same number, else made.
fn cached(cache: &mut Option<(u64, String)>, number: u64, make: impl FnOnce() -> String) -> String {
    match cache {
        Some((last, text)) if *last == number => text.clone(),
        _ => {
            let text = make();
            *cache = Some((number, text.clone()));
            text
        }
    }
}

/// The Monday of a time's week (UTC), as `2026-11-30`.
fn week_of(time: SystemTime) -> String {
    let days = time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
    // 1970-01-01 was a Thursday: three days after a Monday.
    let monday = days - (days + 3) % 7;
    day_of(SystemTime::UNIX_EPOCH + Duration::from_secs(monday * 86_400))
}

/// `F finding(s), N at or above SEVERITY` in validate's note or error.
pub(crate) fn findings_of(text: &str) -> Option<(u64, u64)> {
    let (before, after) = text.split_once(" finding(s), ")?;
    let findings = before.rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    let failing = after.split(' ').next()?.parse().ok()?;
    Some((findings, failing))
}

impl Collector {
    /// An empty collector.
    pub fn new(query: Query, policy: StatsPolicy) -> Collector {
        Collector {
            query,
            policy,
            runs: Counts::default(),
            undated: 0,
            days: BTreeMap::new(),
            weeks: BTreeMap::new(),
            run_durations: Vec::new(),
            stages: BTreeMap::new(),
            approval_waits: Vec::new(),
            approvals_waiting: 0,
            lead_times: Vec::new(),
            components: BTreeMap::new(),
            coverage: BTreeMap::new(),
            coverage_last: BTreeMap::new(),
            findings: BTreeMap::new(),
            recent: VecDeque::new(),
            last_day: None,
            last_week: None,
        }
    }

    /// Adds one run (its latest records), runs oldest first.
    pub fn add(&mut self, run_id: &str, records: &[StepRecord]) {
        let facts: Vec<Fact> = records.iter().map(Fact::of).collect();
        self.add_facts(run_id, &facts);
    }

    /// [`Collector::add`] of the facts of a run's records.
    pub(crate) fn add_facts(&mut self, run_id: &str, records: &[Fact]) {
        if records.is_empty() {
            return;
        }
        let start = records.iter().filter_map(|r| r.started_at.or(r.ended_at)).min();
        if !self.selects(records, start) {
            return;
        }
        let outcome = if records.iter().any(|r| matches!(r.status, Status::Failed | Status::Cancelled)) {
            Outcome::Failed
        } else if records.iter().any(|r| !r.status.is_final()) {
            Outcome::Unfinished
        } else {
            Outcome::Passed
        };
        self.runs.add(outcome);
        if let Some(start) = start {
            let day = self.day(start);
            let days = start.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
            let week = cached(&mut self.last_week, days.saturating_sub((days + 3) % 7), || week_of(start));
            self.days.entry(day).or_default().add(outcome);
            self.weeks.entry(week).or_default().add(outcome);
        }
        let end = records.iter().filter_map(|r| r.ended_at).max();
        let first_start = records.iter().filter_map(|r| r.started_at).min();
        // A person's wait for approval is no pipeline time: taken out of the run's duration.
        let waited = records
            .iter()
            .find(|r| r.step == Step::Approval && r.component == PIPELINE && r.status.is_final())
            .and_then(Fact::duration)
            .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64);
        let duration = match (first_start, end) {
            (Some(from), Some(to)) if outcome != Outcome::Unfinished => Some(millis(from, to).saturating_sub(waited)),
            _ => None,
        };
        self.run_durations.extend(duration);
        let stages = self.add_stages(records);
        self.add_waits(records, start, &stages);
        self.add_components(run_id, records, start);
        self.recent.push_back(RunFigures { run_id: run_id.into(), outcome, duration, stages });
        while self.recent.len() > self.policy.window + 1 {
            self.recent.pop_front();
        }
    }

    /// Whether the query counts a run that started at `start`; one without times is counted
    /// as undated when `--since` is asked.
    fn selects(&mut self, records: &[Fact], start: Option<SystemTime>) -> bool {
        if let Some(since) = self.query.since {
            match start {
                None => {
                    self.undated += 1;
                    return false;
                }
                Some(start) if start < since => return false,
                Some(_) => {}
            }
        }
        match self.query.only_step {
            Some(step) => records.iter().any(|r| r.step == step && r.status.is_result()),
            None => true,
        }
    }

    /// The day of a time ([`day_of`]), the last one asked kept (runs come a day at a time).
    fn day(&mut self, time: SystemTime) -> String {
        let number = time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
        cached(&mut self.last_day, number, || day_of(time))
    }

    /// Each stage: its result over the components, and its span.
    fn add_stages(&mut self, records: &[Fact]) -> BTreeMap<Step, (Option<bool>, Option<u64>)> {
        let mut stages = BTreeMap::new();
        for (step, stage) in stages_of(records) {
            let entry = self.stages.entry(step).or_default();
            match stage.result {
                Some(true) => entry.0 += 1,
                Some(false) => entry.1 += 1,
                None if stage.skipped => entry.2 += 1,
                None => {}
            }
            entry.3.extend(stage.span);
            stages.insert(step, (stage.result, stage.span));
        }
        stages
    }

    /// The approval wait, and the lead time.
    fn add_waits(
        &mut self,
        records: &[Fact],
        start: Option<SystemTime>,
        stages: &BTreeMap<Step, (Option<bool>, Option<u64>)>,
    ) {
        if let Some(approval) = records.iter().find(|r| r.step == Step::Approval && r.component == PIPELINE) {
            match approval.status {
                Status::Pending | Status::Running => self.approvals_waiting += 1,
                Status::Passed | Status::Failed => self
                    .approval_waits
                    .extend(approval.duration().map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)),
                _ => {}
            }
        }
        let lead_step = self.query.lead_step.unwrap_or(Step::ProdDeploy);
        if stages.get(&lead_step).is_some_and(|(result, _)| *result == Some(true))
            && let (Some(from), Some(to)) = (
                start,
                records
                    .iter()
                    .filter(|r| r.step == lead_step && r.status == Status::Passed)
                    .filter_map(|r| r.ended_at)
                    .max(),
            )
        {
            self.lead_times.push(millis(from, to));
        }
    }

    /// Each component's time, its coverage and validate's findings.
    fn add_components(&mut self, run_id: &str, records: &[Fact], start: Option<SystemTime>) {
        let mut per_component: BTreeMap<&str, u64> = BTreeMap::new();
        for record in records.iter().filter(|r| r.component != PIPELINE && r.status != Status::Skipped) {
            if let Some(d) = record.duration() {
                *per_component.entry(record.component).or_default() += d.as_millis() as u64;
            }
            if record.step == Step::Test
                && let Some((lines, branches)) = record.coverage
            {
                self.add_coverage(run_id, record.component, record.ended_at.or(start), lines, branches);
            }
        }
        for (component, total) in per_component {
            match self.components.get_mut(component) {
                Some(times) => times.push(total),
                None => {
                    self.components.insert(component.to_string(), vec![total]);
                }
            }
        }
        if let Some(validate) = records.iter().find(|r| is_validate(r.step, r.component))
            && let Some((findings, failing)) = validate.findings
        {
            let day = validate.ended_at.or(start).map(|at| self.day(at)).unwrap_or_default();
            self.findings.insert(day.clone(), FindingsPoint { day, run_id: run_id.into(), findings, failing });
        }
    }

    /// A test step's coverage: the day's point, and the component's last two figures.
    fn add_coverage(
        &mut self,
        run_id: &str,
        component: &str,
        at: Option<SystemTime>,
        lines: Ratio,
        branches: Option<Ratio>,
    ) {
        let day = at.map(|at| self.day(at)).unwrap_or_default();
        let lines = lines.percent();
        let point = CoveragePoint {
            day: day.clone(),
            run_id: run_id.into(),
            lines,
            branches: branches.and_then(|b| b.percent()),
        };
        match self.coverage.get_mut(component) {
            Some(days) => {
                days.insert(day, point);
            }
            None => {
                self.coverage.insert(component.to_string(), BTreeMap::from([(day, point)]));
            }
        }
        if let Some(lines) = lines {
            let now = (run_id.to_string(), lines);
            match self.coverage_last.get_mut(component) {
                Some(slot) if slot.1.0 != run_id => slot.0 = Some(std::mem::replace(&mut slot.1, now)),
                Some(_) => {}
                None => {
                    self.coverage_last.insert(component.to_string(), (None, now));
                }
            }
        }
    }
    /// The figures.
    pub fn finish(self) -> Stats {
        let periods = |map: BTreeMap<String, Counts>| {
            map.into_iter().map(|(start, counts)| Period { start, counts }).collect::<Vec<_>>()
        };
        let mut slowest: Vec<ComponentTime> = self
            .components
            .into_iter()
            .map(|(component, times)| ComponentTime { component, duration: Figures::of(&times) })
            .collect();
        slowest
            .sort_by(|a, b| b.duration.p95_secs.partial_cmp(&a.duration.p95_secs).unwrap_or(std::cmp::Ordering::Equal));
        slowest.truncate(10);
        Stats {
            since: self.query.since.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            env: self.query.env,
            runs: self.runs,
            undated: self.undated,
            per_day: periods(self.days),
            per_week: periods(self.weeks),
            run_duration: Figures::of(&self.run_durations),
            stages: self
                .stages
                .into_iter()
                .map(|(step, (passed, failed, skipped, durations))| StageStats {
                    step,
                    passed,
                    failed,
                    skipped,
                    success_rate: rate(passed, failed),
                    duration: Figures::of(&durations),
                })
                .collect(),
            approval_wait: Figures::of(&self.approval_waits),
            approvals_waiting: self.approvals_waiting,
            lead_step: self.query.lead_step.unwrap_or(Step::ProdDeploy),
            lead_time: Figures::of(&self.lead_times),
            slowest_components: slowest,
            coverage: self
                .coverage
                .into_iter()
                .map(|(component, days)| CoverageTrend { component, points: days.into_values().collect() })
                .collect(),
            findings: self.findings.into_values().collect(),
            recent: self.recent.into(),
            coverage_last: self.coverage_last,
        }
    }
}

/// The figures of every run in `store` that `query` selects, in one visit of the runs
/// ([`Store::for_each_run`]: one run's records in memory at a time).
pub fn from_store(store: &dyn Store, query: Query, policy: StatsPolicy) -> Result<Stats, Error> {
    let mut collector = Collector::new(query, policy);
    store
        .for_each_run(&mut |run_id, records| {
            collector.add(run_id, &records);
            std::ops::ControlFlow::Continue(())
        })
        .map_err(Error::Store)?;
    Ok(collector.finish())
}

/// [`from_store`] of a file store, read its own way ([`crate::scan`]: the fields the figures
/// need of each line, not whole records): the same figures, or the same error, in a fraction
/// of the time.
pub fn from_file_store(store: &FileStore, query: Query, policy: StatsPolicy) -> Result<Stats, Error> {
    let runs = crate::scan::read(store.path()).map_err(Error::Store)?;
    let mut collector = Collector::new(query, policy);
    runs.visit(|run_id, facts| collector.add_facts(run_id, facts)).map_err(Error::Store)?;
    Ok(collector.finish())
}

/// What `html` reads of a file store, in the one read of [`from_file_store`]: the figures of
/// `query`, and run `run` (default: the newest) with its records as [`Store::run`] reads them
/// (none for a run the store does not hold); `None` for a store without runs.
pub fn from_file_store_with_run(
    store: &FileStore,
    run: Option<&str>,
    query: Query,
    policy: StatsPolicy,
) -> Result<(Stats, Option<WithRun>), Error> {
    let runs = crate::scan::read(store.path()).map_err(Error::Store)?;
    let run = match run.or(runs.newest()) {
        Some(id) => Some(WithRun {
            store: store.clone(),
            run_id: id.to_string(),
            records: runs.records(id).map_err(Error::Store)?,
        }),
        None => None,
    };
    let mut collector = Collector::new(query, policy);
    runs.visit(|run_id, facts| collector.add_facts(run_id, facts)).map_err(Error::Store)?;
    Ok((collector.finish(), run))
}

/// A store with one run already read ([`from_file_store_with_run`]): [`Store::run`] of that
/// run answers from memory, anything else asks `store`.
#[derive(Debug)]
pub struct WithRun {
    /// The store.
    pub store: FileStore,
    /// The run read.
    pub run_id: String,
    /// Its records, as `store.run(run_id)` reads them.
    pub records: Vec<StepRecord>,
}

impl run_state::ReleaseStore for WithRun {
    fn put_release(&self, release: &run_state::Release) -> Result<(), run_state::Error> {
        self.store.put_release(release)
    }
    fn releases(&self, env: &str) -> Result<Vec<run_state::Release>, run_state::Error> {
        self.store.releases(env)
    }
}

impl Store for WithRun {
    fn record(&self, record: &StepRecord) -> Result<(), run_state::Error> {
        self.store.record(record)
    }
    fn run(&self, run_id: &str) -> Result<Vec<StepRecord>, run_state::Error> {
        if run_id == self.run_id { Ok(self.records.clone()) } else { self.store.run(run_id) }
    }
    fn run_ids(&self) -> Result<Vec<String>, run_state::Error> {
        self.store.run_ids()
    }
    fn for_each_run(
        &self,
        each: &mut dyn FnMut(&str, Vec<StepRecord>) -> std::ops::ControlFlow<()>,
    ) -> Result<(), run_state::Error> {
        self.store.for_each_run(each)
    }
    fn mark_success_for(
        &self,
        run_id: &str,
        env: &str,
        step: Step,
    ) -> Result<run_state::SuccessMark, run_state::Error> {
        self.store.mark_success_for(run_id, env, step)
    }
    fn last_success(&self, env: &str) -> Result<Option<run_state::SuccessMark>, run_state::Error> {
        self.store.last_success(env)
    }
    fn acquire_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<(), run_state::Error> {
        self.store.acquire_lock(name, holder, ttl)
    }
    fn release_lock(&self, name: &str, holder: &str) -> Result<(), run_state::Error> {
        self.store.release_lock(name, holder)
    }
}

/// A regression `stats --check` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// The stage (`test`), `run` for the whole run, or `coverage of COMPONENT`.
    pub stage: String,
    /// What happened, on one line.
    pub message: String,
}

/// The regressions of the last run against the runs before it (pure): a stage (or the whole
/// run) slower than `duration_factor` × its P95 over the last `window` runs, a success rate
/// over the last `window` runs under `min_success_rate`, a component's line coverage fallen
/// by more than `max_coverage_drop` points since its previous figure. Durations and rates are
/// judged only with at least `min_runs` earlier figures.
pub fn check(stats: &Stats, policy: &StatsPolicy) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let Some((last, earlier)) = stats.recent.split_last() else {
        return alerts;
    };
    let earlier = &earlier[earlier.len().saturating_sub(policy.window)..];
    let slow = |stage: &str, now: Option<u64>, before: Vec<u64>, alerts: &mut Vec<Alert>| {
        let (Some(now), Some(p95)) = (now, p95(&before)) else { return };
        if before.len() >= policy.min_runs && now as f64 > p95 as f64 * policy.duration_factor {
            alerts.push(Alert {
                stage: stage.into(),
                message: format!(
                    "{stage} took {} in run {}, over {} × its P95 of {} over the {} runs before",
                    secs(now as f64 / 1000.0),
                    last.run_id,
                    policy.duration_factor,
                    secs(p95 as f64 / 1000.0),
                    before.len()
                ),
            });
        }
    };
    slow("run", last.duration, earlier.iter().filter_map(|r| r.duration).collect(), &mut alerts);
    for (step, (_, span)) in &last.stages {
        let before = earlier.iter().filter_map(|r| r.stages.get(step).and_then(|s| s.1)).collect();
        slow(step.as_str(), *span, before, &mut alerts);
    }

    // Success rates over the window, the last run included.
    let window = &stats.recent[stats.recent.len().saturating_sub(policy.window)..];
    let low = |stage: &str, results: Vec<bool>, alerts: &mut Vec<Alert>| {
        let passed = results.iter().filter(|r| **r).count() as u64;
        let Some(rate) = rate(passed, results.len() as u64 - passed) else { return };
        if results.len() >= policy.min_runs && rate < policy.min_success_rate {
            alerts.push(Alert {
                stage: stage.into(),
                message: format!(
                    "{stage} passed {}% of the last {} runs ({passed}), under {}%",
                    percent_text(rate),
                    results.len(),
                    percent_text(policy.min_success_rate)
                ),
            });
        }
    };
    let outcomes = window
        .iter()
        .filter_map(|r| match r.outcome {
            Outcome::Passed => Some(true),
            Outcome::Failed => Some(false),
            Outcome::Unfinished => None,
        })
        .collect();
    low("run", outcomes, &mut alerts);
    for step in Step::ALL {
        let results: Vec<bool> = window.iter().filter_map(|r| r.stages.get(step).and_then(|s| s.0)).collect();
        if !results.is_empty() {
            low(step.as_str(), results, &mut alerts);
        }
    }

    alerts.extend(coverage_alerts(stats, policy, &last.run_id));
    alerts
}

/// A component's line coverage fallen in the last run by more than the policy allows.
fn coverage_alerts(stats: &Stats, policy: &StatsPolicy, last: &str) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (component, (before, (run_id, now))) in &stats.coverage_last {
        if run_id != last {
            continue;
        }
        if let Some((earlier_run, before)) = before
            && before - now > policy.max_coverage_drop + 1e-9
        {
            alerts.push(Alert {
                stage: format!("coverage of {component}"),
                message: format!(
                    "{component}'s line coverage fell from {}% (run {earlier_run}) to {}% in run {run_id}",
                    percent_text(*before),
                    percent_text(*now)
                ),
            });
        }
    }
    alerts
}

/// The SNS message of the alerts of the last run (pure): the subject names the run and the
/// first stage, the body lists every alert.
pub fn alert_message(stats: &Stats, alerts: &[Alert]) -> crate::notify::Message {
    let run = stats.recent.last().map_or("", |r| r.run_id.as_str());
    let first = alerts.first().map_or("", |a| a.stage.as_str());
    let subject: String = format!("Pipeline regression: run {run}: {first}")
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .take(crate::notify::SNS_SUBJECT_LIMIT)
        .collect();
    let mut body = format!("Pipeline regression in run {run}\n\n");
    for alert in alerts {
        let _ = writeln!(body, "- {}: {}", alert.stage, alert.message);
    }
    let mut body = run_state::redact::redact(&body);
    let mut end = body.len().min(crate::notify::SNS_MESSAGE_LIMIT);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body.truncate(end);
    crate::notify::Message { subject, body }
}

fn pct(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |p| format!("{}%", percent_text(p)))
}

impl Stats {
    /// The newest run counted, the one `--check` judges.
    pub fn last_run(&self) -> Option<&str> {
        self.recent.last().map(|r| r.run_id.as_str())
    }

    /// The figures as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    fn title(&self) -> String {
        let mut title = format!(
            "{} run(s): {} passed, {} failed, {} unfinished; success rate {}",
            self.runs.total,
            self.runs.passed,
            self.runs.failed,
            self.runs.unfinished,
            pct(self.runs.success_rate)
        );
        if let Some(since) = &self.since {
            let _ = write!(title, "; since {since}");
        }
        if let Some(env) = &self.env {
            let _ = write!(title, "; deployed to {env}");
        }
        if self.undated > 0 {
            let _ = write!(title, "; {} run(s) without times left out", self.undated);
        }
        title
    }

    /// The rows of each table: (title, header, rows).
    fn tables(&self) -> Vec<Table> {
        let mut tables = vec![self.days_table(), self.stages_table(), self.waits_table()];
        tables.extend(self.trend_tables());
        tables
    }

    /// Runs per day.
    fn days_table(&self) -> Table {
        (
            "Runs per day",
            vec!["day", "runs", "passed", "failed", "success"],
            self.per_day
                .iter()
                .map(|p| {
                    vec![
                        p.start.clone(),
                        p.counts.total.to_string(),
                        p.counts.passed.to_string(),
                        p.counts.failed.to_string(),
                        pct(p.counts.success_rate),
                    ]
                })
                .collect(),
        )
    }

    /// The whole run, then each stage: results and durations.
    fn stages_table(&self) -> Table {
        let opt = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), secs);
        let mut stages = vec![vec![
            "run".to_string(),
            self.runs.passed.to_string(),
            self.runs.failed.to_string(),
            "-".into(),
            pct(self.runs.success_rate),
            opt(self.run_duration.average_secs),
            opt(self.run_duration.p95_secs),
        ]];
        stages.extend(self.stages.iter().map(|s| {
            vec![
                s.step.to_string(),
                s.passed.to_string(),
                s.failed.to_string(),
                s.skipped.to_string(),
                pct(s.success_rate),
                opt(s.duration.average_secs),
                opt(s.duration.p95_secs),
            ]
        }));
        ("Stages", vec!["stage", "passed", "failed", "skipped", "success", "avg", "p95"], stages)
    }

    /// The approval wait and the lead time.
    fn waits_table(&self) -> Table {
        let opt = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), secs);
        (
            "Waits",
            vec!["what", "count", "avg", "p95"],
            vec![
                vec![
                    format!("approval wait ({} waiting)", self.approvals_waiting),
                    self.approval_wait.count.to_string(),
                    opt(self.approval_wait.average_secs),
                    opt(self.approval_wait.p95_secs),
                ],
                vec![
                    format!("lead time, run start to {} passed", self.lead_step),
                    self.lead_time.count.to_string(),
                    opt(self.lead_time.average_secs),
                    opt(self.lead_time.p95_secs),
                ],
            ],
        )
    }

    /// The slowest components, coverage and findings over time.
    fn trend_tables(&self) -> [Table; 3] {
        let opt = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), secs);
        let slowest = (
            "Slowest components",
            vec!["component", "runs", "avg", "p95"],
            self.slowest_components
                .iter()
                .map(|c| {
                    vec![
                        c.component.clone(),
                        c.duration.count.to_string(),
                        opt(c.duration.average_secs),
                        opt(c.duration.p95_secs),
                    ]
                })
                .collect(),
        );
        let coverage = (
            "Coverage (lines, the day's last run)",
            vec!["component", "day", "run", "lines", "branches"],
            self.coverage
                .iter()
                .flat_map(|t| {
                    t.points.iter().map(|p| {
                        vec![t.component.clone(), p.day.clone(), p.run_id.clone(), pct(p.lines), pct(p.branches)]
                    })
                })
                .collect(),
        );
        let findings = (
            "Validate findings (the day's last run)",
            vec!["day", "run", "findings", "failing"],
            self.findings
                .iter()
                .map(|f| vec![f.day.clone(), f.run_id.clone(), f.findings.to_string(), f.failing.to_string()])
                .collect(),
        );
        [slowest, coverage, findings]
    }

    /// Plain text tables for a terminal or a log.
    pub fn to_table(&self) -> String {
        let mut out = format!("{}\n", self.title());
        for (title, header, rows) in self.tables() {
            if rows.is_empty() {
                continue;
            }
            let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
            for row in &rows {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell.chars().count());
                }
            }
            let line = |cells: Vec<String>| {
                let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}", w = *w)).collect();
                format!("  {}\n", padded.join("  ").trim_end())
            };
            let _ = write!(out, "\n{title}\n");
            out.push_str(&line(header.iter().map(|h| h.to_string()).collect()));
            for row in rows {
                out.push_str(&line(row));
            }
        }
        out
    }

    /// Markdown tables (a CodeBuild report, a GitHub summary).
    pub fn to_markdown(&self) -> String {
        let cell = |c: &str| c.replace('|', "\\|").replace('\n', " ");
        let mut out = format!("# Pipeline statistics\n\n{}\n", self.title());
        for (title, header, rows) in self.tables() {
            if rows.is_empty() {
                continue;
            }
            let _ = write!(out, "\n## {title}\n\n| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
            for row in rows {
                let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use run_state::Coverage;

    use super::*;

    const DAY: u64 = 86_400;
    // 2023-11-14T22:13:20Z, a Tuesday.
    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn rec(run: &str, component: &str, step: Step, status: Status, from: u64, secs: u64) -> StepRecord {
        let mut r = StepRecord::new(run, "abc", component, step, status);
        r.started_at = Some(at(from));
        r.ended_at = Some(at(from + secs));
        r
    }

    /// A run at `start`: validate, api test (`test_secs`, coverage `covered`/100), deploy, the
    /// approval waiting `wait` seconds, prod-deploy.
    fn run(id: &str, start: u64, test_secs: u64, test: Status, covered: u64) -> Vec<StepRecord> {
        let mut validate = rec(id, PIPELINE, Step::Validate, Status::Passed, start, 10);
        validate.details.note =
            Some("2 template(s), 5 file(s) scanned, 1 tool(s): 3 finding(s), 1 at or above error".into());
        let mut t = rec(id, "api", Step::Test, test, start + 10, test_secs);
        t.details.coverage = Some(Box::new(Coverage { lines: Ratio { covered, total: 100 }, ..Coverage::default() }));
        let after = start + 10 + test_secs;
        let mut records = vec![validate, t];
        if test == Status::Passed {
            records.push(rec(id, "api", Step::Deploy, Status::Passed, after, 20));
            records.push(rec(id, PIPELINE, Step::Approval, Status::Passed, after + 20, 600));
            records.push(rec(id, "api", Step::ProdDeploy, Status::Passed, after + 620, 30));
        }
        records
    }

    fn collect(runs: &[(String, Vec<StepRecord>)], query: Query) -> Stats {
        let mut collector = Collector::new(query, StatsPolicy::default());
        for (id, records) in runs {
            collector.add(id, records);
        }
        collector.finish()
    }

    fn history() -> Vec<(String, Vec<StepRecord>)> {
        // Two runs on day one, one failed run on day two, one waiting run on day three.
        let mut waiting = run("r4", T0 + 2 * DAY, 40, Status::Passed, 80);
        waiting.retain(|r| r.step != Step::ProdDeploy);
        let approval = waiting.iter_mut().find(|r| r.step == Step::Approval).unwrap();
        approval.status = Status::Pending;
        approval.ended_at = None;
        vec![
            ("r1".into(), run("r1", T0, 60, Status::Passed, 80)),
            ("r2".into(), run("r2", T0 + 3600, 120, Status::Passed, 82)),
            ("r3".into(), run("r3", T0 + DAY, 30, Status::Failed, 70)),
            ("r4".into(), waiting),
        ]
    }

    #[test]
    fn runs_per_day_rates_and_durations_are_exact() {
        let stats = collect(&history(), Query::default());
        assert_eq!((stats.runs.total, stats.runs.passed, stats.runs.failed, stats.runs.unfinished), (4, 2, 1, 1));
        assert!((stats.runs.success_rate.unwrap() - 200.0 / 3.0).abs() < 1e-9);
        let days: Vec<(&str, u64)> = stats.per_day.iter().map(|p| (p.start.as_str(), p.counts.total)).collect();
        // T0 is 22:13:20 UTC: r2, an hour later, is the same day.
        assert_eq!(days, [("2023-11-14", 2), ("2023-11-15", 1), ("2023-11-16", 1)]);
        let weeks: Vec<&str> = stats.per_week.iter().map(|p| p.start.as_str()).collect();
        assert_eq!(weeks, ["2023-11-13"]);
        let test = stats.stages.iter().find(|s| s.step == Step::Test).unwrap();
        assert_eq!((test.passed, test.failed), (3, 1));
        assert_eq!(test.success_rate, Some(75.0));
        // 60, 120, 30, 40 seconds: average 62.5, P95 (nearest rank of 4) 120.
        assert_eq!((test.duration.average_secs, test.duration.p95_secs), (Some(62.5), Some(120.0)));
        // Finished runs, less the 600s approval wait: r1 10+60+20+30 = 120s, r2 180s, r3 40s.
        assert_eq!(stats.run_duration.count, 3);
        assert_eq!(stats.run_duration.p95_secs, Some(180.0));
        // Approvals: two decided after 600s, one waiting.
        assert_eq!((stats.approval_wait.count, stats.approval_wait.average_secs), (2, Some(600.0)));
        assert_eq!(stats.approvals_waiting, 1);
        // Lead time to prod-deploy: the whole run for r1 and r2.
        assert_eq!(stats.lead_step, Step::ProdDeploy);
        assert_eq!((stats.lead_time.count, stats.lead_time.average_secs), (2, Some(750.0)));
        // The approval's wait is not the approval stage's duration.
        let approval = stats.stages.iter().find(|s| s.step == Step::Approval).unwrap();
        assert_eq!(approval.duration.count, 0);
    }

    #[test]
    fn coverage_findings_and_slowest_components_over_time() {
        let mut runs = history();
        let mut slow = rec("r5", "web", Step::Test, Status::Passed, T0 + 3 * DAY, 900);
        slow.commit = "def".into();
        runs.push(("r5".into(), vec![slow]));
        let stats = collect(&runs, Query::default());
        let api = stats.coverage.iter().find(|c| c.component == "api").unwrap();
        let points: Vec<(&str, &str, Option<f64>)> =
            api.points.iter().map(|p| (p.day.as_str(), p.run_id.as_str(), p.lines)).collect();
        // The day's last run: r2 over r1 on the 14th.
        assert_eq!(
            points,
            [("2023-11-14", "r2", Some(82.0)), ("2023-11-15", "r3", Some(70.0)), ("2023-11-16", "r4", Some(80.0))]
        );
        assert_eq!(stats.findings.len(), 3);
        assert_eq!((stats.findings[0].findings, stats.findings[0].failing), (3, 1));
        let slowest: Vec<&str> = stats.slowest_components.iter().map(|c| c.component.as_str()).collect();
        assert_eq!(slowest, ["web", "api"]);
        let text = stats.to_table();
        assert!(text.contains("web        1     15m00s  15m00s"), "{text}");
        let markdown = stats.to_markdown();
        assert!(markdown.contains("| test | 4 | 1 | 0 | 80% | 3m50s | 15m00s |"), "{markdown}");
        let json: serde_json::Value = serde_json::from_str(&stats.to_json()).unwrap();
        assert_eq!(json["runs"]["total"], 5);
        assert_eq!(json["stages"][1]["step"], "test");
    }

    #[test]
    fn since_and_env_select_runs() {
        let query = Query { since: Some(at(T0 + DAY)), ..Query::default() };
        let stats = collect(&history(), query);
        assert_eq!(stats.runs.total, 2);
        assert_eq!(stats.since.as_deref(), Some("2023-11-15T22:13:20Z"));
        // Only runs that recorded prod-deploy with a result.
        let query = Query { only_step: Some(Step::ProdDeploy), env: Some("prod".into()), ..Query::default() };
        let stats = collect(&history(), query);
        assert_eq!((stats.runs.total, stats.env.as_deref()), (2, Some("prod")));
        // Lead time to dev's deploy instead.
        let query = Query { lead_step: Some(Step::Deploy), ..Query::default() };
        let stats = collect(&history(), query);
        // r1: 10+60+20 = 90s, r2: 150s, r4: 10+40+20 = 70s.
        assert_eq!((stats.lead_time.count, stats.lead_time.average_secs), (3, Some(310.0 / 3.0)));
        // A run without times is left out when --since is asked, and said so.
        let mut runs = history();
        runs.push(("r0".into(), vec![StepRecord::new("r0", "abc", "api", Step::Test, Status::Passed)]));
        let stats = collect(&runs, Query { since: Some(at(0)), ..Query::default() });
        assert_eq!((stats.runs.total, stats.undated), (4, 1));
        assert!(stats.to_table().contains("1 run(s) without times left out"));
    }

    #[test]
    fn an_empty_history_is_an_honest_empty_report() {
        let stats = collect(&[], Query::default());
        assert_eq!(stats.runs.total, 0);
        let text = stats.to_table();
        assert!(text.starts_with("0 run(s): 0 passed, 0 failed, 0 unfinished; success rate n/a\n"), "{text}");
        assert!(!text.contains("Runs per day"), "{text}");
        assert!(check(&stats, &StatsPolicy::default()).is_empty());
    }

    #[test]
    fn p95_is_the_nearest_rank() {
        assert_eq!(p95(&[]), None);
        assert_eq!(p95(&[7]), Some(7));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(p95(&hundred), Some(95));
        let twenty: Vec<u64> = (1..=20).rev().collect();
        assert_eq!(p95(&twenty), Some(19));
    }

    fn steady(n: usize) -> Vec<(String, Vec<StepRecord>)> {
        (0..n)
            .map(|i| {
                (format!("r{i}"), run(&format!("r{i}"), T0 + i as u64 * 3600, 60 + i as u64 % 3, Status::Passed, 80))
            })
            .collect()
    }

    fn alerts(runs: &[(String, Vec<StepRecord>)], policy: StatsPolicy) -> Vec<String> {
        let mut collector = Collector::new(Query::default(), policy);
        for (id, records) in runs {
            collector.add(id, records);
        }
        check(&collector.finish(), &policy).into_iter().map(|a| format!("{}: {}", a.stage, a.message)).collect()
    }

    #[test]
    fn a_slow_stage_in_the_last_run_is_named() {
        let policy = StatsPolicy::default();
        let mut runs = steady(10);
        assert_eq!(alerts(&runs, policy), Vec::<String>::new());
        // Tests took 62s at most before; 200s is over 1.5 × 62 (the run, less its approval wait,
        // 260s over 1.5 × 122).
        runs.push(("r10".into(), run("r10", T0 + 20 * 3600, 200, Status::Passed, 80)));
        assert_eq!(
            alerts(&runs, policy),
            [
                "run: run took 4m20s in run r10, over 1.5 × its P95 of 2m02s over the 10 runs before",
                "test: test took 3m20s in run r10, over 1.5 × its P95 of 1m02s over the 10 runs before"
            ]
        );
        // 90s is within 1.5 × 62 = 93.
        runs.pop();
        runs.push(("r10".into(), run("r10", T0 + 20 * 3600, 90, Status::Passed, 80)));
        assert_eq!(alerts(&runs, policy), Vec::<String>::new());
        // Too few earlier runs: nothing judged.
        let few: Vec<_> =
            steady(3).into_iter().chain([("rx".to_string(), run("rx", T0, 900, Status::Passed, 80))]).collect();
        assert_eq!(alerts(&few, policy), Vec::<String>::new());
    }

    #[test]
    fn a_low_success_rate_and_a_coverage_drop_are_named() {
        let policy = StatsPolicy { window: 5, ..StatsPolicy::default() };
        let mut runs = steady(4);
        runs.push(("f1".into(), run("f1", T0 + 10 * 3600, 60, Status::Failed, 80)));
        runs.push(("f2".into(), run("f2", T0 + 11 * 3600, 60, Status::Failed, 75)));
        // The last 5 runs: 3 passed, 2 failed: 60% < 80%, for the run and for the test stage.
        assert_eq!(
            alerts(&runs, policy),
            [
                "run: run passed 60% of the last 5 runs (3), under 80%",
                "test: test passed 60% of the last 5 runs (3), under 80%",
                "coverage of api: api's line coverage fell from 80% (run f1) to 75% in run f2",
            ]
        );
        let lenient = StatsPolicy { min_success_rate: 50.0, max_coverage_drop: 5.0, ..policy };
        assert_eq!(alerts(&runs, lenient), Vec::<String>::new());
    }

    #[test]
    fn thresholds_are_read_from_the_stats_section_and_mistakes_name_key_and_line() {
        let config = |text: &str| ConfigFile::from_text("pipeline.toml".as_ref(), text);
        assert_eq!(StatsSettings::policy(&config("[gate]\n")).unwrap(), StatsPolicy::default());
        let policy =
            StatsSettings::policy(&config("[stats]\nwindow = 30\nduration_factor = 2.0\nmin_success_rate = 90\n"));
        let policy = policy.unwrap();
        assert_eq!((policy.window, policy.duration_factor, policy.min_success_rate), (30, 2.0, 90.0));
        let error = StatsSettings::policy(&config("[stats]\nwindow = 30\nfactor = 2\n")).unwrap_err().to_string();
        assert!(error.starts_with("pipeline.toml:3: stats.factor: unknown field"), "{error}");
        let error = StatsSettings::policy(&config("[stats]\n\nduration_factor = 0.5\n")).unwrap_err().to_string();
        assert_eq!(error, "pipeline.toml:3: stats.duration_factor: must be 1 to 100");
        let error = StatsSettings::policy(&config("[stats]\nwindow = 0\n")).unwrap_err().to_string();
        assert_eq!(error, "pipeline.toml:2: stats.window: must be 1 to 10000");
    }

    #[test]
    fn since_takes_durations_and_names_a_bad_one() {
        assert_eq!(parse_since("30d").unwrap(), Duration::from_secs(30 * DAY));
        assert_eq!(parse_since("12h").unwrap(), Duration::from_secs(12 * 3600));
        let error = parse_since("lately").unwrap_err();
        assert_eq!(error.to_string(), "--since `lately` is not a duration; write e.g. 30d, 12h or 2weeks");
        assert!(std::error::Error::source(&error).is_some());
    }
}
