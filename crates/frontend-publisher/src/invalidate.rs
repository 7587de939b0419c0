//! The CloudFront invalidation: created with backoff while too many are in progress, then
//! optionally waited for, with a bound.

use std::time::Duration;

use aws_sdk_cloudfront::error::SdkError;
use aws_sdk_cloudfront::operation::create_invalidation::CreateInvalidationError;
use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};
use aws_target::ErrorKind;
use aws_target::poll::{self, Backoff, Poll, PollError, Wait};

use crate::{Error, Event, InvalidationSummary};

/// Attempts of `CreateInvalidation` while CloudFront answers `TooManyInvalidationsInProgress`.
const ATTEMPTS: u32 = 6;

/// Whether a status means the invalidation is done: moto says `COMPLETED`, AWS `Completed`.
pub fn is_completed(status: &str) -> bool {
    status.eq_ignore_ascii_case("completed")
}

fn error(distribution: &str, kind: ErrorKind, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Invalidation { distribution: distribution.to_owned(), kind, source: Box::new(source) }
}

/// Creates the invalidation (the release id as its caller reference, so a retry never makes
/// two), pausing `backoff`, doubled each time, while CloudFront has too many in progress;
/// then, with `wait`, polls until it completes or the wait is over (not an error: the
/// summary says `InProgress`).
pub async fn invalidate(
    cloudfront: &aws_sdk_cloudfront::Client,
    distribution: &str,
    release: &str,
    paths: &[String],
    backoff: Duration,
    wait: Option<Duration>,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<InvalidationSummary, Error> {
    let batch = InvalidationBatch::builder()
        .caller_reference(release)
        .paths(
            Paths::builder()
                .quantity(paths.len() as i32)
                .set_items(Some(paths.to_vec()))
                .build()
                .map_err(|e| error(distribution, ErrorKind::Other, e))?,
        )
        .build()
        .map_err(|e| error(distribution, ErrorKind::Other, e))?;
    let transient = |e: &SdkError<CreateInvalidationError>, attempt| {
        let too_many = e.as_service_error().is_some_and(|s| s.is_too_many_invalidations_in_progress());
        let kind = ErrorKind::of(e);
        let again = too_many || matches!(kind, ErrorKind::Throttled | ErrorKind::ServiceError);
        if again {
            on_event(Event::Retrying { what: "CreateInvalidation", attempt, kind });
        }
        again
    };
    let create_backoff = Backoff { first: backoff, max: Duration::MAX, factor: 2 };
    let created = poll::retry(create_backoff, ATTEMPTS, tokio::time::sleep, transient, async || {
        cloudfront.create_invalidation().distribution_id(distribution).invalidation_batch(batch.clone()).send().await
    })
    .await
    .map_err(|e| error(distribution, ErrorKind::of(&e), e))?;
    let invalidation = created.invalidation();
    let id = invalidation.map(|i| i.id().to_owned()).unwrap_or_default();
    let mut status = invalidation.map(|i| i.status().to_owned()).unwrap_or_default();
    on_event(Event::Invalidating { id: &id, paths: paths.len() });
    if let Some(wait) = wait.filter(|wait| !is_completed(&status) && !wait.is_zero()) {
        status = wait_until_completed(cloudfront, distribution, &id, wait).await?;
    }
    let completed = is_completed(&status);
    Ok(InvalidationSummary { id, paths: paths.to_vec(), status, completed })
}

/// Polls the invalidation until it completes or `wait` is over, the last poll at its end;
/// returns the last status read.
async fn wait_until_completed(
    cloudfront: &aws_sdk_cloudfront::Client,
    distribution: &str,
    id: &str,
    wait: Duration,
) -> Result<String, Error> {
    let backoff = Backoff { first: Duration::from_millis(500), max: Duration::from_secs(20), factor: 2 };
    let wait = Wait { pause_first: true, poll_at_deadline: true, ..Wait::new(backoff, wait) };
    let mut status = String::new();
    let polled = poll::until(wait, tokio::time::sleep, async || {
        let out = cloudfront
            .get_invalidation()
            .distribution_id(distribution)
            .id(id)
            .send()
            .await
            .map_err(|e| error(distribution, ErrorKind::of(&e), e))?;
        status = out.invalidation().map(|i| i.status().to_owned()).unwrap_or_default();
        Ok(if is_completed(&status) { Poll::Ready(()) } else { Poll::Pending })
    })
    .await;
    match polled {
        // Still in progress when the wait is over (no cancel flag is passed): not an error,
        // the summary says so.
        Ok(()) | Err(PollError::TimedOut { .. } | PollError::Cancelled { .. }) => Ok(status),
        Err(PollError::Failed(error)) => Err(error),
    }
}
