//! The one way a step's record goes from running to its end: [`Recording::begin`] writes it
//! running (when, and which process runs it, so a reader can tell a step that waits from one
//! whose runner died) and [`Recording::end`] writes its end once. [`record_step`] and
//! [`record_step_async`] wrap a piece of work with both.

use std::time::SystemTime;

use crate::{Details, Error, Status, Step, StepRecord, Store};

/// A step being recorded.
pub struct Recording<'a> {
    store: &'a dyn Store,
    record: StepRecord,
}

impl<'a> Recording<'a> {
    /// Records `component`'s `step` of the run as running, from now.
    pub fn begin(
        store: &'a dyn Store,
        run_id: &str,
        commit: &str,
        component: &str,
        step: Step,
    ) -> Result<Recording<'a>, Error> {
        Recording::begin_with(store, run_id, commit, component, step, |_| {})
    }

    /// [`begin`](Self::begin) with details known from the start (the log being written).
    pub fn begin_with(
        store: &'a dyn Store,
        run_id: &str,
        commit: &str,
        component: &str,
        step: Step,
        fill: impl FnOnce(&mut Details),
    ) -> Result<Recording<'a>, Error> {
        let mut record = StepRecord::new(run_id, commit, component, step, Status::Running);
        record.started_at = Some(SystemTime::now());
        fill(&mut record.details);
        record.details.set_runner_to_this_process();
        store.record(&record)?;
        record.details.runner = None;
        record.details.runner_process = None;
        Ok(Recording { store, record })
    }

    /// The record as it was begun (its start time, run, commit).
    pub fn record(&self) -> &StepRecord {
        &self.record
    }

    /// Ends the step now with `status`, its details filled by `fill` (a note, an error, the
    /// log); the record written.
    pub fn end(mut self, status: Status, fill: impl FnOnce(&mut Details)) -> Result<StepRecord, Error> {
        self.record.status = status;
        self.record.ended_at = Some(SystemTime::now());
        fill(&mut self.record.details);
        self.store.record(&self.record)?;
        Ok(self.record)
    }

    /// Ends the step as `work` ended: passed with its note, or failed with its error's chain.
    pub fn end_with<T, E: std::error::Error>(self, result: &Result<(T, String), E>) -> Result<StepRecord, Error> {
        match result {
            Ok((_, note)) => self.end(Status::Passed, |d| d.note = Some(note.clone())),
            Err(error) => self.end(Status::Failed, |d| d.error = Some(crate::error_chain(error))),
        }
    }
}

/// Records `component`'s `step` around `work`: running before it, then passed with the note
/// `work` returns, or failed with its error, so the step is never left running. The outer
/// error is the store's.
pub fn record_step<T, E: std::error::Error>(
    store: &dyn Store,
    run_id: &str,
    commit: &str,
    component: &str,
    step: Step,
    work: impl FnOnce() -> Result<(T, String), E>,
) -> Result<Result<T, E>, Error> {
    let recording = Recording::begin(store, run_id, commit, component, step)?;
    let result = work();
    recording.end_with(&result)?;
    Ok(result.map(|(value, _)| value))
}

/// [`record_step`] for async work.
pub async fn record_step_async<T, E: std::error::Error>(
    store: &dyn Store,
    run_id: &str,
    commit: &str,
    component: &str,
    step: Step,
    work: impl Future<Output = Result<(T, String), E>>,
) -> Result<Result<T, E>, Error> {
    let recording = Recording::begin(store, run_id, commit, component, step)?;
    let result = work.await;
    recording.end_with(&result)?;
    Ok(result.map(|(value, _)| value))
}

/// [`record_step`] for a pipeline-wide step (component [`crate::PIPELINE`]).
pub fn record_pipeline_step<T, E: std::error::Error>(
    store: &dyn Store,
    run_id: &str,
    commit: &str,
    step: Step,
    work: impl FnOnce() -> Result<(T, String), E>,
) -> Result<Result<T, E>, Error> {
    record_step(store, run_id, commit, crate::PIPELINE, step, work)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileStore;

    #[derive(Debug, thiserror::Error)]
    #[error("the work failed")]
    struct Failed;

    #[test]
    fn a_step_is_running_while_its_work_runs_then_ends_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let seen = record_step(&store, "r1", "abc", "api", Step::Build, || {
            let during = store.run("r1").unwrap();
            assert_eq!(during[0].status, Status::Running);
            assert!(during[0].details.runner.is_some(), "the running record names its process");
            Ok::<_, Failed>((7, "built".to_string()))
        })
        .unwrap();
        assert_eq!(seen.unwrap(), 7);
        let after = store.run("r1").unwrap();
        assert_eq!((after[0].status, after[0].details.note.as_deref()), (Status::Passed, Some("built")));
        assert!(after[0].started_at.is_some() && after[0].ended_at >= after[0].started_at);

        let failed = record_step(&store, "r1", "abc", "web", Step::Build, || Err::<((), String), _>(Failed)).unwrap();
        assert!(failed.is_err());
        let web = store.run("r1").unwrap().into_iter().find(|r| r.component == "web").unwrap();
        assert_eq!((web.status, web.details.error.as_deref()), (Status::Failed, Some("the work failed")));
    }
}
