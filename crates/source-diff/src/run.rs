//! Starting a pipeline run: the source and diff steps, recorded, with `diff.json` in the run folder.

use std::path::Path;
use std::time::SystemTime;

use run_state::{RunDir, RunFile, Step, Store};

use crate::{BaseRequest, Components, DiffReport, Error, Repo};

/// Starting a run failed: the diff itself, or the store.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The diff failed (recorded as the failed diff step).
    #[error(transparent)]
    Diff(#[from] Error),
    /// The status store or the run folder could not be written.
    #[error(transparent)]
    Store(#[from] run_state::Error),
}

/// Creates a run for `head` under `state_dir`, records its source and diff
/// steps (failed with the error when the diff fails, never left running),
/// and writes the report to `diff.json` in the run folder.
pub fn begin_run(
    repo: &Repo,
    components: &Components,
    request: &BaseRequest,
    head: &str,
    worktree: bool,
    store: &dyn Store,
    state_dir: &Path,
) -> Result<(RunDir, DiffReport), RunError> {
    // Head and the base in one git call; a base that cannot be trusted fails the diff step.
    let crate::Resolution { head: head_id, base } = crate::resolve(repo, components, request, head)?;
    let run_dir = RunDir::create(state_dir, &run_state::new_run_id(&head_id, SystemTime::now()))?;
    let run_id = run_dir.run_id.as_str();
    run_state::record_pipeline_step(store, run_id, &head_id, Step::Source, || {
        Ok::<_, Error>(((), format!("{head} is {head_id}")))
    })??;
    let report = run_state::record_pipeline_step(store, run_id, &head_id, Step::Diff, || {
        let report = crate::diff_from(repo, components, head_id.clone(), base?, worktree)?;
        let json = serde_json::to_string_pretty(&report).expect("a diff report always serialises");
        run_dir.write(RunFile::Diff, json.as_bytes())?;
        let summary = report.summary();
        Ok::<_, RunError>((report, summary))
    })??;
    Ok((run_dir, report))
}
