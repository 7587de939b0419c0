//! The coverage check after a test job: reads the component's report, cuts it to the
//! component's source files, adds the files no report mentions and the diff's changed
//! lines, and measures (`coverage::measure`). The I/O half of what the plan says.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::SystemTime;

use coverage::{Changed, CoverageSpec, Measured, Resolver, Unreported};
use source_diff::{Components, DiffReport, Repo};

/// What a coverage check needs beyond the plan: which files are a component's (the
/// catalogue) and which lines the run changed (its diff).
#[derive(Debug, Clone, Copy)]
pub struct CoverageScope<'a> {
    /// The component catalogue.
    pub components: &'a Components,
    /// The run's diff.
    pub diff: &'a DiffReport,
}

/// Checks components' coverage in one folder; the repository's file list is read once.
pub(crate) struct Checker<'a> {
    root: &'a Path,
    scope: CoverageScope<'a>,
    files: OnceLock<Result<BTreeSet<String>, String>>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(root: &'a Path, scope: CoverageScope<'a>) -> Checker<'a> {
        Checker { root, scope, files: OnceLock::new() }
    }

    /// The repository's files at the commit under test (with untracked ones when the run
    /// includes the work tree).
    fn files(&self) -> Result<&BTreeSet<String>, String> {
        self.files
            .get_or_init(|| {
                let repo = Repo::at_root(self.root);
                let mut files: BTreeSet<String> =
                    repo.tracked_files().map_err(|e| format!("coverage: {e}"))?.into_iter().collect();
                if self.scope.diff.worktree {
                    files.extend(
                        self.scope
                            .diff
                            .files
                            .iter()
                            .filter(|f| self.root.join(&f.path).is_file())
                            .map(|f| f.path.clone()),
                    );
                }
                Ok(files)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Measures one component after its test job (started at `started`); `Err` is the one
    /// line that fails the step when the coverage cannot be measured at all.
    pub(crate) fn check(
        &self,
        component: &str,
        spec: &CoverageSpec,
        key: &str,
        started: Option<SystemTime>,
    ) -> Result<Measured, String> {
        let filter = spec.check().map_err(|e| format!("coverage: {key}.coverage.{e}"))?;
        let files = self.files()?;
        let keep = |path: &str| self.scope.components.owns(component, path) && filter.counts(path);
        let resolver = Resolver::new(self.root, files);
        let read = coverage::read_report(self.root, spec, key, started, &resolver, &keep)
            .map_err(|e| format!("coverage: {}", run_state::error_chain(&e)))?;
        let sources: Vec<String> = files.iter().filter(|f| keep(f)).cloned().collect();
        let unreported: BTreeMap<String, BTreeSet<u32>> = match spec.unreported {
            Unreported::Ignore => BTreeMap::new(),
            Unreported::Zero => sources
                .iter()
                .filter(|f| !read.files.contains_key(*f))
                .map(|f| (f.clone(), coverage::source_lines(&self.root.join(f))))
                .collect(),
        };
        let changed = match (spec.min_changed_lines, &self.scope.diff.base) {
            (None, _) => None,
            (Some(_), None) => Some(Changed::All),
            (Some(_), Some(base)) => {
                let head = (!self.scope.diff.worktree).then_some(self.scope.diff.head.as_str());
                let lines = Repo::at_root(self.root)
                    .changed_lines(base, head, &sources)
                    .map_err(|e| format!("coverage: the changed lines: {e}"))?;
                Some(Changed::Lines(lines))
            }
        };
        let mut measured = coverage::measure(spec, &read.files, &unreported, changed.as_ref(), key);
        if read.files.is_empty() && !read.outside.is_empty() && measured.failure.is_some() {
            // Say why nothing matched: the paths the report names are not this repository's.
            let failure = measured.failure.take().unwrap_or_default();
            measured.failure = Some(format!(
                "{failure} (it names {} files, none found here, e.g. {})",
                read.named,
                read.outside.join(", ")
            ));
        }
        Ok(measured)
    }
}
