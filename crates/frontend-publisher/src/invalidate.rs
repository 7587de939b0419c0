//! The CloudFront invalidation: created with backoff while too many are in progress, then
//! optionally waited for, with a bound.

use std::time::{Duration, Instant};

use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};
use aws_target::ErrorKind;

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
    let mut attempt = 1;
    let mut pause = backoff;
    let created = loop {
        match cloudfront
            .create_invalidation()
            .distribution_id(distribution)
            .invalidation_batch(batch.clone())
            .send()
            .await
        {
            Ok(out) => break out,
            Err(e) => {
                let too_many = e.as_service_error().is_some_and(|s| s.is_too_many_invalidations_in_progress());
                let kind = ErrorKind::of(&e);
                if attempt < ATTEMPTS && (too_many || matches!(kind, ErrorKind::Throttled | ErrorKind::ServiceError)) {
                    on_event(Event::Retrying { what: "CreateInvalidation", attempt, kind });
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                    continue;
                }
                return Err(error(distribution, kind, e));
            }
        }
    };
    let invalidation = created.invalidation();
    let id = invalidation.map(|i| i.id().to_owned()).unwrap_or_default();
    let mut status = invalidation.map(|i| i.status().to_owned()).unwrap_or_default();
    on_event(Event::Invalidating { id: &id, paths: paths.len() });
    if let Some(wait) = wait {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(500);
        while !is_completed(&status) && Instant::now() < deadline {
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_secs(20));
            let out = cloudfront
                .get_invalidation()
                .distribution_id(distribution)
                .id(&id)
                .send()
                .await
                .map_err(|e| error(distribution, ErrorKind::of(&e), e))?;
            status = out.invalidation().map(|i| i.status().to_owned()).unwrap_or_default();
        }
    }
    let completed = is_completed(&status);
    Ok(InvalidationSummary { id, paths: paths.to_vec(), status, completed })
}
