//! Updating a function's code only when it changed: plan from `CodeSha256`, then apply.
//!
//! The plan compares the package's base64 SHA-256 with the `CodeSha256` Lambda
//! reports for the function; applying calls `UpdateFunctionCode` (from S3 or
//! with the zip inline, under 50 MB), waits until the update has finished, and
//! checks that Lambda now reports the package's hash. Calls go through a
//! [`RateLimiter`] so many functions stay within Lambda's control-plane quota.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::LastUpdateStatus;
use aws_target::poll::{self, Backoff, Poll, PollError, Wait};

use crate::{MAX_ZIP_BYTES, Package};

/// Where the new code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSource {
    /// The zip itself, sent inline (under 50 MB).
    Inline,
    /// An object the deploy stage uploaded.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
}

/// What to do for one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeUpdatePlan {
    /// The function name or ARN.
    pub function: String,
    /// The `CodeSha256` Lambda reports now.
    pub current: String,
    /// The package's `CodeSha256`.
    pub wanted: String,
    /// The zip.
    pub package: PathBuf,
}

impl CodeUpdatePlan {
    /// Whether the code must be updated.
    pub fn needs_update(&self) -> bool {
        self.current != self.wanted
    }
}

/// What applying did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeUpdateOutcome {
    /// The function already ran this code: no call made.
    Unchanged,
    /// Updated; Lambda reports the new hash.
    Updated {
        /// The new `CodeSha256`.
        code_sha256: String,
    },
}

/// Errors of the update, each naming the function.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// An AWS call failed.
    #[error("{operation} {function}")]
    Aws {
        /// The API operation.
        operation: &'static str,
        /// The function.
        function: String,
        /// The SDK's error, with its causes.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Lambda reports the update failed.
    #[error("updating {function} failed: {reason}")]
    Failed {
        /// The function.
        function: String,
        /// `LastUpdateStatusReason`.
        reason: String,
    },
    /// The update did not finish in time.
    #[error("updating {function} did not finish within {}s; check the function in the console", after.as_secs())]
    TimedOut {
        /// The function.
        function: String,
        /// How long we waited.
        after: Duration,
    },
    /// Lambda reports other code than the package.
    #[error(
        "{function} reports CodeSha256 `{reported}` after the update, expected `{expected}`; the uploaded object may be missing or different"
    )]
    HashMismatch {
        /// The function.
        function: String,
        /// What Lambda reports.
        reported: String,
        /// The package's hash.
        expected: String,
    },
    /// The zip is too big to send inline.
    #[error("{} is {} bytes, over the 50 MB inline limit; upload it to S3 and use CodeSource::S3", path.display(), size)]
    TooBigInline {
        /// The zip.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The zip could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The zip.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Spaces calls at least `interval` apart, across tasks. (Not a poll: it waits for no state
/// and asks nothing again, so it does not go through `aws_target::poll`.)
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimiter {
    /// At most `per_second` calls a second.
    pub fn per_second(per_second: u32) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs(1) / per_second.max(1),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Waits for the next slot.
    pub async fn acquire(&self) {
        let mut next = self.next.lock().await;
        let now = Instant::now();
        if *next > now {
            tokio::time::sleep(*next - now).await;
        }
        *next = Instant::now().max(*next) + self.interval;
    }
}

/// Lambda's default control-plane quota leaves room for about this many calls a second.
pub const DEFAULT_CALLS_PER_SECOND: u32 = 10;

fn aws<E>(operation: &'static str, function: &str, error: E) -> UpdateError
where
    E: std::error::Error + Send + Sync + 'static,
{
    UpdateError::Aws { operation, function: function.to_string(), source: Box::new(error) }
}

async fn configuration(
    client: &Client,
    limiter: &RateLimiter,
    function: &str,
) -> Result<aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationOutput, UpdateError> {
    limiter.acquire().await;
    client
        .get_function_configuration()
        .function_name(function)
        .send()
        .await
        .map_err(|e| aws("GetFunctionConfiguration", function, e))
}

/// Reads the function's current hash and plans the update (no change is made).
pub async fn plan(
    client: &Client,
    limiter: &RateLimiter,
    function: &str,
    package: &Package,
) -> Result<CodeUpdatePlan, UpdateError> {
    let config = configuration(client, limiter, function).await?;
    Ok(CodeUpdatePlan {
        function: function.to_string(),
        current: config.code_sha256().unwrap_or_default().to_string(),
        wanted: package.code_sha256.clone(),
        package: package.path.clone(),
    })
}

/// Applies a plan: updates only when the hashes differ, waits for the update
/// to finish (at most `wait`), and checks the reported hash.
pub async fn apply(
    client: &Client,
    limiter: &RateLimiter,
    plan: &CodeUpdatePlan,
    source: &CodeSource,
    wait: Duration,
) -> Result<CodeUpdateOutcome, UpdateError> {
    if !plan.needs_update() {
        return Ok(CodeUpdateOutcome::Unchanged);
    }
    let function = plan.function.as_str();
    let request = client.update_function_code().function_name(function);
    let request = match source {
        CodeSource::S3 { bucket, key } => request.s3_bucket(bucket).s3_key(key),
        CodeSource::Inline => {
            let bytes =
                std::fs::read(&plan.package).map_err(|e| UpdateError::Io { path: plan.package.clone(), source: e })?;
            if bytes.len() as u64 > MAX_ZIP_BYTES {
                return Err(UpdateError::TooBigInline { path: plan.package.clone(), size: bytes.len() as u64 });
            }
            request.zip_file(Blob::new(bytes))
        }
    };
    limiter.acquire().await;
    request.send().await.map_err(|e| aws("UpdateFunctionCode", function, e))?;

    wait_for_update(client, limiter, plan, wait).await
}

/// The pauses between reads of an update in progress: 250 ms, doubled up to 5 s.
const UPDATE_BACKOFF: Backoff = Backoff { first: Duration::from_millis(250), max: Duration::from_secs(5), factor: 2 };

/// Reads the function until its update has finished (at most `wait`), then checks its hash.
async fn wait_for_update(
    client: &Client,
    limiter: &RateLimiter,
    plan: &CodeUpdatePlan,
    wait: Duration,
) -> Result<CodeUpdateOutcome, UpdateError> {
    let function = plan.function.as_str();
    let finished = poll::until(Wait::new(UPDATE_BACKOFF, wait), tokio::time::sleep, async || {
        let config = configuration(client, limiter, function).await?;
        match config.last_update_status() {
            Some(LastUpdateStatus::InProgress) => Ok(Poll::Pending),
            Some(LastUpdateStatus::Failed) => Err(UpdateError::Failed {
                function: function.to_string(),
                reason: config.last_update_status_reason().unwrap_or("no reason given").to_string(),
            }),
            // Successful, or absent (a function that was never updated before).
            _ => Ok(Poll::Ready(config.code_sha256().unwrap_or_default().to_string())),
        }
    })
    .await;
    let reported = match finished {
        Ok(reported) => reported,
        Err(PollError::Failed(error)) => return Err(error),
        // No cancel flag is passed: only the deadline ends the wait.
        Err(PollError::TimedOut { .. } | PollError::Cancelled { .. }) => {
            return Err(UpdateError::TimedOut { function: function.to_string(), after: wait });
        }
    };
    if reported != plan.wanted {
        return Err(UpdateError::HashMismatch {
            function: function.to_string(),
            reported,
            expected: plan.wanted.clone(),
        });
    }
    Ok(CodeUpdateOutcome::Updated { code_sha256: reported })
}

/// [`plan`] then [`apply`].
pub async fn update_if_changed(
    client: &Client,
    limiter: &RateLimiter,
    function: &str,
    package: &Package,
    source: &CodeSource,
    wait: Duration,
) -> Result<CodeUpdateOutcome, UpdateError> {
    let plan = plan(client, limiter, function, package).await?;
    apply(client, limiter, &plan, source, wait).await
}
