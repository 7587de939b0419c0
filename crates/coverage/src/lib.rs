//! Coverage gates: a component's test step passes only when its tests cover enough of the
//! component's own files.
//!
//! A component's test command names the report its tests write (`coverage = { report =
//! "coverage/api.xml", format = "cobertura", min_lines = 80 }`). After the step, the report
//! is read as a stream with a size bound ([`read_report`]: Cobertura XML with quick-xml,
//! LCOV line by line), its paths mapped to repository files (absolute paths, paths relative
//! to a `<source>`, and paths from another checkout, by their longest repository-relative
//! suffix, as coverage tools do), and cut to the component's files ([`Filter`]: the
//! component's globs, then `include` and `exclude` so only source files count). A source file
//! of the component that the report never mentions counts as 0% (`unreported = "zero"`, the
//! default), so a new untested file cannot hide. [`measure`] (pure) turns that into the figures
//! ([`run_state::Coverage`]) and, below a minimum, the one line that fails the step.
//!
//! ```
//! use std::collections::{BTreeMap, BTreeSet};
//!
//! let report = "SF:/ci/checkout/src/app.js\nDA:1,1\nDA:2,0\nend_of_record\n\
//!               SF:other/lib.js\nDA:1,1\nend_of_record\n";
//! let known = BTreeSet::from(["src/app.js".to_string(), "src/new.js".to_string(), "other/lib.js".to_string()]);
//! let resolver = coverage::Resolver::new("/work/repo".as_ref(), &known);
//! let ours = |path: &str| path.starts_with("src/");
//! let read = coverage::parse_report(report.as_bytes(), coverage::Format::Lcov, &resolver, &ours)?;
//! assert_eq!(read.files.keys().collect::<Vec<_>>(), ["src/app.js"]);
//! // src/new.js is the component's too, and no report mentions it: its 3 lines count as missed.
//! let unreported = BTreeMap::from([("src/new.js".to_string(), BTreeSet::from([1, 2, 3]))]);
//! let spec: coverage::CoverageSpec =
//!     toml::from_str("report = 'lcov.info'\nformat = 'lcov'\nmin_lines = 80")?;
//! let measured = coverage::measure(&spec, &read.files, &unreported, None, "components.web.test");
//! assert_eq!(measured.coverage.lines.describe(), "20% (1/5)");
//! assert!(measured.failure.unwrap().starts_with("coverage below the minimum: lines 20% (1/5) < 80%"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod parse;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use globset::GlobSet;
use pipeline_config::Spanned;
use run_state::{Coverage, FileCoverage, Ratio, percent_text};
use serde::{Deserialize, Serialize};

pub use parse::{FileLines, LineHit, MAX_LINES, ParseError, cobertura, lcov, merge};

/// The largest report read (a bigger one is an error that says so, never a partial read).
pub const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;

/// The most bytes of one unreported source file read to count its lines.
pub const MAX_SOURCE_BYTES: u64 = 8 * 1024 * 1024;

/// The report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Cobertura XML: `pytest --cov --cov-report=xml`, coverage.py, many others.
    Cobertura,
    /// LCOV: c8, nyc, jest, vitest, node's `--test-reporter=lcov`.
    Lcov,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Cobertura => "cobertura",
            Format::Lcov => "lcov",
        })
    }
}

/// A minimum in percent, from 0 to 100 (`80`, `72.5`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
pub struct Percent(f64);

// Checked finite when read.
impl Eq for Percent {}

impl Percent {
    /// The value, from 0 to 100.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        if value.is_finite() && (0.0..=100.0).contains(&value) {
            Ok(Percent(value))
        } else {
            Err(serde::de::Error::custom(format!("{value} is not a percentage from 0 to 100")))
        }
    }
}

/// What a source file that no report mentions counts as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unreported {
    /// 0% of its non-blank lines (the default): a new untested file cannot hide.
    #[default]
    Zero,
    /// Nothing: only the files the report mentions count.
    Ignore,
}

/// `coverage = { … }` on a component's `test` command.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoverageSpec {
    /// Where the test command writes its report, relative to the monorepo root.
    pub report: Spanned<String>,
    /// Its format.
    pub format: Format,
    /// The least share of the component's lines the tests must run, in percent.
    #[serde(default)]
    pub min_lines: Option<Percent>,
    /// The least share of its branches (the report must have branch data).
    #[serde(default)]
    pub min_branches: Option<Percent>,
    /// The least share of the lines the run's diff changed (of the component's source files).
    #[serde(default)]
    pub min_changed_lines: Option<Percent>,
    /// Which of the component's files are source files that count ([`DEFAULT_INCLUDE`] when unset).
    #[serde(default)]
    pub include: Option<Vec<Spanned<String>>>,
    /// Which do not, although `include` matches them: tests, say ([`DEFAULT_EXCLUDE`] when unset).
    #[serde(default)]
    pub exclude: Option<Vec<Spanned<String>>>,
    /// What a source file that no report mentions counts as.
    #[serde(default)]
    pub unreported: Unreported,
}

/// Source files, when `include` is unset.
pub const DEFAULT_INCLUDE: &[&str] = &["**/*.py", "**/*.{js,jsx,mjs,cjs,ts,tsx,mts,cts}"];

/// Test files, when `exclude` is unset: they run, they are not what is measured.
pub const DEFAULT_EXCLUDE: &[&str] = &[
    "**/test/**",
    "**/tests/**",
    "**/__tests__/**",
    "**/test_*.py",
    "**/*_test.py",
    "**/conftest.py",
    "**/*.{test,spec}.{js,jsx,mjs,cjs,ts,tsx,mts,cts}",
];

/// A mistake in a [`CoverageSpec`]: the key under `coverage` and the span of the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SpecError {
    /// `report`, `include` or `exclude`.
    pub key: &'static str,
    /// Where the value is in the config.
    pub span: Option<Range<usize>>,
    /// What is wrong and what to do.
    pub message: String,
}

/// Which of a component's files count: `include` and not `exclude`.
#[derive(Debug, Clone)]
pub struct Filter {
    include: GlobSet,
    exclude: GlobSet,
}

impl Filter {
    /// Whether a repo-relative path (of the component) is a source file that counts.
    pub fn counts(&self, path: &str) -> bool {
        self.include.is_match(path) && !self.exclude.is_match(path)
    }
}

impl CoverageSpec {
    /// Checks the values serde cannot: the report path stays inside the monorepo, the globs
    /// compile; the filter the globs make.
    pub fn check(&self) -> Result<Filter, SpecError> {
        self.check_written()?;
        let compile = |key: &'static str, globs: &Option<Vec<Spanned<String>>>, default: &[&str]| {
            let mut set = globset::GlobSetBuilder::new();
            match globs {
                Some(globs) => {
                    for glob in globs {
                        set.add(parse_glob(key, glob)?);
                    }
                }
                None => {
                    for glob in default {
                        set.add(pipeline_config::glob(glob).expect("the default globs compile"));
                    }
                }
            }
            set.build().map_err(|e| SpecError { key, span: None, message: e.to_string() })
        };
        Ok(Filter {
            include: compile("include", &self.include, DEFAULT_INCLUDE)?,
            exclude: compile("exclude", &self.exclude, DEFAULT_EXCLUDE)?,
        })
    }

    /// What a config check needs, without building the filter (its matchers cost more than the
    /// rest of a `source-diff` call): the report path stays inside the monorepo, every glob
    /// parses. [`CoverageSpec::check`] still fails on a set too large to build, after this passed.
    pub fn check_written(&self) -> Result<(), SpecError> {
        let report = self.report.get_ref();
        let path = Path::new(report);
        let escapes = path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        if report.trim().is_empty() || escapes {
            return Err(SpecError {
                key: "report",
                span: Some(self.report.span()),
                message: format!(
                    "`{report}` must be a path relative to the monorepo root, without `..` (where the test command writes its report)"
                ),
            });
        }
        for (key, globs) in [("include", &self.include), ("exclude", &self.exclude)] {
            for glob in globs.iter().flatten() {
                parse_glob(key, glob)?;
            }
        }
        Ok(())
    }

    /// One line for a dry run: `lines ≥ 80%, branches ≥ 60% from coverage/api.xml (cobertura)`.
    pub fn describe(&self) -> String {
        let mut minimums = Vec::new();
        for (name, min) in
            [("lines", self.min_lines), ("branches", self.min_branches), ("changed lines", self.min_changed_lines)]
        {
            if let Some(min) = min {
                minimums.push(format!("{name} ≥ {}%", percent_text(min.get())));
            }
        }
        let minimums = if minimums.is_empty() { "figures only (no minimum)".to_string() } else { minimums.join(", ") };
        format!("{minimums} from {} ({})", self.report.get_ref(), self.format)
    }
}

/// One glob of `include` or `exclude`, parsed as every glob of a `pipeline.toml` is.
fn parse_glob(key: &'static str, glob: &Spanned<String>) -> Result<globset::Glob, SpecError> {
    pipeline_config::glob(glob.get_ref()).map_err(|e| SpecError {
        key,
        span: Some(glob.span()),
        message: format!("`{}` is not a valid glob: {}", glob.get_ref(), e.kind()),
    })
}

/// Maps the paths a report names to the repository's files.
#[derive(Debug)]
pub struct Resolver<'a> {
    root: PathBuf,
    known: &'a BTreeSet<String>,
}

impl<'a> Resolver<'a> {
    /// `root`: the monorepo's root as the tests saw it; `known`: its files, repo-relative.
    pub fn new(root: &Path, known: &'a BTreeSet<String>) -> Resolver<'a> {
        Resolver { root: normalize(&root.to_string_lossy()), known }
    }

    /// The repository file a report's `name` means: under one of the report's `sources`
    /// (Cobertura), under the root, or else the longest suffix of it that is a repository
    /// file (a report written in another checkout or container). `None`: not a file of this
    /// repository.
    pub fn resolve(&self, name: &str, sources: &[String]) -> Option<String> {
        let name = name.replace('\\', "/");
        let mut candidates: Vec<PathBuf> = Vec::new();
        if Path::new(&name).is_absolute() {
            candidates.push(normalize(&name));
        } else {
            candidates.extend(sources.iter().map(|s| normalize(&format!("{}/{name}", s.replace('\\', "/")))));
            candidates.push(normalize(&name));
        }
        for candidate in &candidates {
            let relative = candidate.strip_prefix(&self.root).unwrap_or(candidate);
            if let Some(text) = relative.to_str()
                && self.known.contains(text)
            {
                return Some(text.to_string());
            }
        }
        for candidate in &candidates {
            let parts: Vec<&str> = candidate.iter().filter_map(|p| p.to_str()).filter(|p| *p != "/").collect();
            for start in 0..parts.len() {
                let suffix = parts[start..].join("/");
                if self.known.contains(&suffix) {
                    return Some(suffix);
                }
            }
        }
        None
    }
}

/// `a/./b/../c` → `a/c`, lexically.
fn normalize(path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A report cut to one component.
#[derive(Debug, Clone, Default)]
pub struct ReadReport {
    /// The component's files the report mentions, repo-relative, with their lines.
    pub files: BTreeMap<String, FileLines>,
    /// How many files the report names in all.
    pub named: usize,
    /// Of those, the first few not found in the repository (for the message when none is the component's).
    pub outside: Vec<String>,
}

/// Parses a report and keeps the files `keep` accepts (after mapping their paths).
pub fn parse_report(
    input: impl std::io::BufRead,
    format: Format,
    resolver: &Resolver<'_>,
    keep: &dyn Fn(&str) -> bool,
) -> Result<ReadReport, ParseError> {
    let mut read = ReadReport::default();
    let mut kept = 0usize;
    let mut on_file = |name: &str, sources: &[String], lines: FileLines| {
        read.named += 1;
        match resolver.resolve(name, sources) {
            // Past the bound nothing more is kept; the error follows once the parser returns.
            Some(path) if keep(&path) && kept <= MAX_LINES => {
                kept += lines.len();
                merge(read.files.entry(path).or_default(), lines);
            }
            Some(_) => {}
            None if read.outside.len() < 3 => read.outside.push(name.to_string()),
            None => {}
        }
    };
    match format {
        Format::Cobertura => cobertura(input, &mut on_file)?,
        Format::Lcov => lcov(input, &mut on_file)?,
    }
    if kept > MAX_LINES {
        return Err(ParseError::TooManyLines { limit: MAX_LINES });
    }
    Ok(read)
}

/// Why a component's coverage could not be measured. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No report where the config says.
    #[error(
        "no coverage report at {path} after the test step; make {key}.run write it there or fix {key}.coverage.report"
    )]
    Missing {
        /// The report's path.
        path: String,
        /// `components.NAME.test`.
        key: String,
    },
    /// A report older than the step: an earlier run's.
    #[error(
        "the coverage report {path} is older than this test step (left by an earlier run); make {key}.run write it there or fix {key}.coverage.report"
    )]
    Stale {
        /// The report's path.
        path: String,
        /// `components.NAME.test`.
        key: String,
    },
    /// Over [`MAX_REPORT_BYTES`].
    #[error(
        "the coverage report {path} is {size} bytes, over the {limit}-byte limit; measure only the component's code (e.g. pytest --cov=DIR) so its report stays small"
    )]
    TooLarge {
        /// The report's path.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The report could not be opened or read.
    #[error("cannot read the coverage report {path}")]
    Read {
        /// The report's path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not the format the config says.
    #[error(
        "the coverage report {path} is not valid {format}; check that {key}.coverage.format matches what the tests write"
    )]
    Parse {
        /// The report's path.
        path: String,
        /// The format expected.
        format: Format,
        /// `components.NAME.test`.
        key: String,
        /// What is wrong where.
        #[source]
        source: ParseError,
    },
}

/// Reads `root/spec.report` after the test step that started at `started`: a regular file,
/// written by this step (not older than it), at most [`MAX_REPORT_BYTES`], cut to `keep`.
pub fn read_report(
    root: &Path,
    spec: &CoverageSpec,
    key: &str,
    started: Option<SystemTime>,
    resolver: &Resolver<'_>,
    keep: &dyn Fn(&str) -> bool,
) -> Result<ReadReport, Error> {
    let shown = spec.report.get_ref().clone();
    let path = root.join(&shown);
    let file = match pipeline_config::fs::open_regular(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Missing { path: shown, key: key.into() });
        }
        Err(source) => return Err(Error::Read { path: shown, source }),
    };
    let metadata = file.metadata().map_err(|source| Error::Read { path: shown.clone(), source })?;
    if metadata.len() > MAX_REPORT_BYTES {
        return Err(Error::TooLarge { path: shown, size: metadata.len(), limit: MAX_REPORT_BYTES });
    }
    // File times have a coarse grain on some file systems: a second of slack.
    if let (Some(started), Ok(modified)) = (started, metadata.modified())
        && modified + std::time::Duration::from_secs(1) < started
    {
        return Err(Error::Stale { path: shown, key: key.into() });
    }
    // Bounded even if the file grows while it is read: past the limit the reader sees an end,
    // and the parser a truncated report.
    let input = BufReader::with_capacity(64 * 1024, file.take(MAX_REPORT_BYTES));
    parse_report(input, spec.format, resolver, keep).map_err(|source| match source {
        ParseError::Io(source) => Error::Read { path: shown, source },
        source => Error::Parse { path: shown, format: spec.format, key: key.into(), source },
    })
}

/// The non-blank line numbers of a source file (what a file no report mentions counts as,
/// missed). A file that cannot be read counts as one missed line, so it still cannot pass.
pub fn source_lines(path: &Path) -> BTreeSet<u32> {
    match pipeline_config::fs::read_regular(path, MAX_SOURCE_BYTES) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, _)| u32::try_from(i + 1).unwrap_or(u32::MAX))
            .collect(),
        Err(_) => BTreeSet::from([1]),
    }
}

/// Which lines the run's diff changed, of the component's source files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// No base to diff from (every component changed): every line counts as changed.
    All,
    /// Added or modified line numbers at head, by repo-relative path.
    Lines(BTreeMap<String, BTreeSet<u32>>),
}

/// What [`measure`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    /// The figures, for the record and the reports.
    pub coverage: Coverage,
    /// Why the step fails, on one line; `None` when every minimum is reached.
    pub failure: Option<String>,
}

/// The figures of one component and whether they reach the minimums: pure.
///
/// `reported`: the component's source files the report mentions (already cut); `unreported`:
/// the component's source files it does not, with their non-blank lines (each counted as
/// missed; empty with `unreported = "ignore"`); `changed`: the diff's lines, when
/// `min_changed_lines` asks for them; `key`: the command's config key, named in the fix.
pub fn measure(
    spec: &CoverageSpec,
    reported: &BTreeMap<String, FileLines>,
    unreported: &BTreeMap<String, BTreeSet<u32>>,
    changed: Option<&Changed>,
    key: &str,
) -> Measured {
    let mut lines = Ratio::default();
    let mut branches = Ratio::default();
    let mut changed_lines = Ratio::default();
    let mut files = Vec::new();
    let is_changed = |path: &str, line: u32| match changed {
        Some(Changed::All) => true,
        Some(Changed::Lines(map)) => map.get(path).is_some_and(|l| l.contains(&line)),
        None => false,
    };
    for (path, hits) in reported {
        let mut file = Ratio::default();
        for (&number, hit) in hits {
            branches.total += u64::from(hit.branches_total);
            branches.covered += u64::from(hit.branches_covered.min(hit.branches_total));
            if !hit.line {
                continue;
            }
            file.total += 1;
            let ran = hit.hits > 0;
            file.covered += u64::from(ran);
            if is_changed(path, number) {
                changed_lines.total += 1;
                changed_lines.covered += u64::from(ran);
            }
        }
        lines.total += file.total;
        lines.covered += file.covered;
        files.push(FileCoverage { path: path.clone(), lines: file, reported: true });
    }
    for (path, numbers) in unreported.iter().filter(|(path, _)| !reported.contains_key(*path)) {
        let total = numbers.len() as u64;
        lines.total += total;
        changed_lines.total += numbers.iter().filter(|&&n| is_changed(path, n)).count() as u64;
        files.push(FileCoverage { path: path.clone(), lines: Ratio { covered: 0, total }, reported: false });
    }
    // Lowest share first; among equals, the file with the most missed lines.
    files.sort_by(|a, b| {
        let share = |f: &FileCoverage| f.lines.percent().unwrap_or(100.0);
        share(a).total_cmp(&share(b)).then((b.lines.total - b.lines.covered).cmp(&(a.lines.total - a.lines.covered)))
    });
    let unreported_count = files.iter().filter(|f| !f.reported).count() as u64;
    files.truncate(Coverage::MAX_FILES);
    let coverage = Coverage {
        report: spec.report.get_ref().clone(),
        lines,
        branches: (branches.total > 0).then_some(branches),
        changed_lines: changed.map(|_| changed_lines),
        min_lines: spec.min_lines.map(Percent::get),
        min_branches: spec.min_branches.map(Percent::get),
        min_changed_lines: spec.min_changed_lines.map(Percent::get),
        files,
        unreported: unreported_count,
    };
    let failure = verdict(&coverage, spec, key);
    Measured { coverage, failure }
}

/// The one line that fails the step, or `None`.
fn verdict(coverage: &Coverage, spec: &CoverageSpec, key: &str) -> Option<String> {
    let report = spec.report.get_ref();
    if coverage.lines.total == 0 && spec.min_lines.is_some() {
        return Some(format!(
            "coverage: {report} covers none of the component's source files; check the paths the tests measure (e.g. pytest --cov=DIR) or {key}.coverage.include"
        ));
    }
    if coverage.branches.is_none() && spec.min_branches.is_some() && coverage.lines.total > 0 {
        return Some(format!(
            "coverage: {report} has no branch data for the component's files; measure branches (pytest --cov-branch) or remove {key}.coverage.min_branches"
        ));
    }
    let mut below = Vec::new();
    let mut keys = Vec::new();
    let mut check = |name: &str, setting: &str, ratio: Option<Ratio>, min: Option<Percent>| {
        if let (Some(ratio), Some(min)) = (ratio, min)
            && !ratio.reaches(min.get())
        {
            below.push(format!("{name} {} < {}%", ratio.describe(), percent_text(min.get())));
            keys.push(format!("{key}.coverage.{setting}"));
        }
    };
    check("lines", "min_lines", Some(coverage.lines), spec.min_lines);
    check("branches", "min_branches", coverage.branches, spec.min_branches);
    check("changed lines", "min_changed_lines", coverage.changed_lines, spec.min_changed_lines);
    if below.is_empty() {
        return None;
    }
    let worst: Vec<String> = coverage
        .files_below()
        .take(3)
        .map(|f| {
            if f.reported {
                format!("{} {}", f.path, f.lines.describe())
            } else {
                format!("{} 0% (in no report)", f.path)
            }
        })
        .collect();
    let worst = if worst.is_empty() { String::new() } else { format!("; furthest below: {}", worst.join(", ")) };
    Some(format!("coverage below the minimum: {}{worst}; add tests or lower {}", below.join(", "), keys.join(" / ")))
}

#[cfg(test)]
mod tests;
