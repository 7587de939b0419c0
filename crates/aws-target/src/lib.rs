//! Which AWS a stage talks to, decided in one place.
//!
//! Libraries take SDK clients; binaries and `cargo xtask` build them here:
//!
//! - [`Target`] describes the account to reach: the standard `aws-config` chain
//!   (profiles, SSO, environment, web identity in CodeBuild), an optional region and
//!   profile, an endpoint for the emulator (`--endpoint-url` or `AWS_ENDPOINT_URL`),
//!   and an optional role to assume with an external id (cross-account deploys).
//! - [`load`] turns it into an [`aws_config::SdkConfig`], and [`identity`] asks STS
//!   who that is, so a binary can print the account and region before it changes anything.
//! - Client builders (features `s3`, `cloudformation`, `cloudfront`, `lambda`, `dynamodb`,
//!   `sns`, `cloudwatch`) apply
//!   what each service needs: S3 switches to path-style addressing when an endpoint is
//!   set (emulators do not resolve virtual-host names), and every client can carry a
//!   [`RequestCounter`] that benchmarks and tests read.
//! - [`Target::for_environment`] aims a target at one environment's account, from
//!   [`Account::from_config`] (`[deploy.environments.NAME]`: its region, its role assumed with
//!   its external id): the one way every stage and the pipeline reach an environment.
//! - [`ErrorKind::of`] sorts any SDK error into what a user can act on (throttled,
//!   access denied, no credentials, not found …), from the error's code, never its text.
//!
//! ```
//! # async fn demo() -> Result<(), aws_target::Error> {
//! let target = aws_target::Target {
//!     endpoint_url: Some("http://127.0.0.1:5000".into()),
//!     region: Some("us-east-1".into()),
//!     ..aws_target::Target::default()
//! };
//! let counter = aws_target::RequestCounter::default();
//! let config = aws_target::load(&target).await?;
//! let _s3 = aws_target::s3(&config, Some(&counter));
//! assert_eq!(counter.total(), 0);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

mod calls;
#[cfg(feature = "cli")]
mod cli;
mod environment;
pub mod poll;
pub use calls::{Call, CallLog, LOG_VAR, STAGE_VAR, read_log};
#[cfg(feature = "cli")]
pub use cli::TargetArgs;
pub use environment::{Account, role_account, session_name};

/// What went wrong while reaching AWS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A region name that is not one (`us-east1`).
    #[error("region `{0}` is not a region name (like `us-east-1`); fix --region, AWS_REGION or the profile")]
    BadRegion(String),
    /// No region anywhere.
    #[error("no AWS region: pass --region, set AWS_REGION, or set one in the profile")]
    NoRegion,
    /// `--region` names another region than the environment's own.
    #[error(
        "`{environment}` lives in {own} (deploy.environments.{environment}.region), not {given}; drop --region (or AWS's region setting) or fix the config"
    )]
    RegionConflict {
        /// The environment.
        environment: String,
        /// The region the caller named.
        given: String,
        /// The environment's region.
        own: String,
    },
    /// An endpoint that is not an http(s) URL.
    #[error("endpoint `{0}` is not an http:// or https:// URL; fix --endpoint-url or AWS_ENDPOINT_URL")]
    BadEndpoint(String),
    /// STS could not say who the credentials belong to.
    #[error("cannot tell which AWS account these credentials reach ({kind})")]
    Identity {
        /// What kind of failure.
        kind: ErrorKind,
        /// STS's error.
        #[source]
        source: BoxError,
    },
    /// The call log (`PIPELINE_CALL_LOG`) cannot be appended to.
    #[error("cannot append to the call log {}", path.display())]
    CallLog {
        /// The log.
        path: std::path::PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Where the stages send their calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// An endpoint for every service (the emulator); `AWS_ENDPOINT_URL` is read when unset.
    pub endpoint_url: Option<String>,
    /// The region; otherwise the chain's (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// A named profile; otherwise the chain's (`AWS_PROFILE`, `default`).
    pub profile: Option<String>,
    /// A role to assume on top of the chain's credentials.
    pub assume_role: Option<AssumeRole>,
    /// The external id [`Target::for_environment`] assumes the environment's role with, in
    /// place of the config's (kept in a secret store, handed over by the caller).
    pub external_id: Option<String>,
}

/// A role to assume (a production account reached from the tools account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    /// The role's ARN.
    pub role_arn: String,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<String>,
    /// The session name CloudTrail shows.
    pub session_name: String,
}

/// Whether a region name has the shape of one: `us-east-1`, `eu-central-2`, `us-gov-west-1`,
/// `cn-north-1`, `ap-southeast-5`.
pub fn is_region_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// The SDK config of an environment's account: [`Target::for_environment`], then [`load`].
/// `who` names the caller in the assumed role's session (`stack-deployer-prod`).
pub async fn load_environment(
    base: &Target,
    environment: &str,
    account: &Account,
    who: &str,
) -> Result<SdkConfig, Error> {
    load(&base.for_environment(environment, account, who)?).await
}

/// The SDK config for a target: the standard chain plus what the target overrides.
///
/// Never fails on missing credentials (the SDK resolves them lazily); call [`identity`]
/// to find out before changing anything.
pub async fn load(target: &Target) -> Result<SdkConfig, Error> {
    load_with(target, aws_config::defaults(BehaviorVersion::latest())).await
}

/// [`load`] from a loader the caller prepared (tests give it fixed credentials).
pub async fn load_with(target: &Target, loader: aws_config::ConfigLoader) -> Result<SdkConfig, Error> {
    let mut loader = loader;
    if let Some(region) = &target.region {
        if !is_region_name(region) {
            return Err(Error::BadRegion(region.clone()));
        }
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &target.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(endpoint) = &target.endpoint_url {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(Error::BadEndpoint(endpoint.clone()));
        }
        loader = loader.endpoint_url(endpoint);
    }
    let base = loader.load().await;
    match base.region() {
        None => return Err(Error::NoRegion),
        Some(region) if !is_region_name(region.as_ref()) => return Err(Error::BadRegion(region.to_string())),
        Some(_) => {}
    }
    let log = calls::Sink::from_env();
    if log.is_some() {
        calls::learn_account(&base).await;
    }
    let Some(role) = &target.assume_role else { return Ok(base) };
    let mut provider =
        aws_config::sts::AssumeRoleProvider::builder(&role.role_arn).session_name(&role.session_name).configure(&base);
    if let Some(id) = &role.external_id {
        provider = provider.external_id(id);
    }
    let provider = aws_credential_types::provider::SharedCredentialsProvider::new(provider.build().await);
    let provider = match log {
        Some(sink) => calls::assumed_role(sink, provider, role),
        None => provider,
    };
    Ok(base.into_builder().credentials_provider(provider).build())
}

/// Whether a config talks to an endpoint of its own (an emulator) rather than AWS.
pub fn has_custom_endpoint(config: &SdkConfig) -> bool {
    config.endpoint_url().is_some()
}

/// Who the credentials are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The 12-digit account.
    pub account: String,
    /// The caller's ARN.
    pub arn: String,
    /// The region calls go to.
    pub region: String,
    /// The endpoint when one is set (an emulator).
    pub endpoint: Option<String>,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "account {} ({}) in {}", self.account, self.arn, self.region)?;
        if let Some(endpoint) = &self.endpoint {
            write!(f, " at {endpoint}")?;
        }
        Ok(())
    }
}

/// Asks STS (`GetCallerIdentity`) which account and principal the config's credentials are.
pub async fn identity(config: &SdkConfig) -> Result<Identity, Error> {
    let mut builder = aws_sdk_sts::config::Builder::from(config);
    if let Some(log) = CallLog::from_env(config) {
        builder = builder.interceptor(log);
    }
    identity_from(&aws_sdk_sts::Client::from_conf(builder.build()), config).await
}

/// [`identity`] through a client the caller built (tests give it recorded responses).
pub(crate) async fn identity_from(sts: &aws_sdk_sts::Client, config: &SdkConfig) -> Result<Identity, Error> {
    let out = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| Error::Identity { kind: ErrorKind::of(&e), source: e.into() })?;
    Ok(Identity {
        account: out.account().unwrap_or_default().to_owned(),
        arn: out.arn().unwrap_or_default().to_owned(),
        region: config.region().map(|r| r.to_string()).unwrap_or_default(),
        endpoint: config.endpoint_url().map(str::to_owned),
    })
}

/// An S3 client; path-style addressing when the config has an endpoint of its own.
#[cfg(feature = "s3")]
pub fn s3(config: &SdkConfig, counter: Option<&RequestCounter>) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::config::Builder::from(config).force_path_style(has_custom_endpoint(config));
    if let Some(counter) = counter {
        builder = builder.interceptor(counter.clone());
    }
    if let Some(log) = CallLog::from_env(config) {
        builder = builder.interceptor(log);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// A CloudFormation client.
#[cfg(feature = "cloudformation")]
pub fn cloudformation(config: &SdkConfig, counter: Option<&RequestCounter>) -> aws_sdk_cloudformation::Client {
    let mut builder = aws_sdk_cloudformation::config::Builder::from(config);
    if let Some(counter) = counter {
        builder = builder.interceptor(counter.clone());
    }
    if let Some(log) = CallLog::from_env(config) {
        builder = builder.interceptor(log);
    }
    aws_sdk_cloudformation::Client::from_conf(builder.build())
}

/// A CloudFront client.
#[cfg(feature = "cloudfront")]
pub fn cloudfront(config: &SdkConfig, counter: Option<&RequestCounter>) -> aws_sdk_cloudfront::Client {
    let mut builder = aws_sdk_cloudfront::config::Builder::from(config);
    if let Some(counter) = counter {
        builder = builder.interceptor(counter.clone());
    }
    if let Some(log) = CallLog::from_env(config) {
        builder = builder.interceptor(log);
    }
    aws_sdk_cloudfront::Client::from_conf(builder.build())
}

/// A Lambda client.
#[cfg(feature = "lambda")]
pub fn lambda(config: &SdkConfig, counter: Option<&RequestCounter>) -> aws_sdk_lambda::Client {
    let mut builder = aws_sdk_lambda::config::Builder::from(config);
    if let Some(counter) = counter {
        builder = builder.interceptor(counter.clone());
    }
    if let Some(log) = CallLog::from_env(config) {
        builder = builder.interceptor(log);
    }
    aws_sdk_lambda::Client::from_conf(builder.build())
}

/// A DynamoDB client (the status store).
#[cfg(feature = "dynamodb")]
pub fn dynamodb(config: &SdkConfig, counter: Option<&RequestCounter>) -> aws_sdk_dynamodb::Client {
    let mut builder = aws_sdk_dynamodb::config::Builder::from(config);
    if let Some(counter) = counter {
        builder = builder.interceptor(counter.clone());
    }
    if let Some(log) = CallLog::from_env(config) {
        builder = builder.interceptor(log);
    }
    aws_sdk_dynamodb::Client::from_conf(builder.build())
}

/// An SNS client (notifications).
#[cfg(feature = "sns")]
pub fn sns(config: &SdkConfig, counter: Option<&RequestCounter>) -> aws_sdk_sns::Client {
    let mut builder = aws_sdk_sns::config::Builder::from(config);
    if let Some(counter) = counter {
        builder = builder.interceptor(counter.clone());
    }
    if let Some(log) = CallLog::from_env(config) {
        builder = builder.interceptor(log);
    }
    aws_sdk_sns::Client::from_conf(builder.build())
}

/// A CloudWatch client (metrics).
#[cfg(feature = "cloudwatch")]
pub fn cloudwatch(config: &SdkConfig, counter: Option<&RequestCounter>) -> aws_sdk_cloudwatch::Client {
    let mut builder = aws_sdk_cloudwatch::config::Builder::from(config);
    if let Some(counter) = counter {
        builder = builder.interceptor(counter.clone());
    }
    if let Some(log) = CallLog::from_env(config) {
        builder = builder.interceptor(log);
    }
    aws_sdk_cloudwatch::Client::from_conf(builder.build())
}

/// The same config with an HTTP client (a connection pool) of its own.
///
/// The SDK's HTTP client spawns each connection's task on the runtime that opened it, and
/// clients built from one `SdkConfig` share one pool. A client driven from another runtime
/// (the status store runs its calls on a runtime of its own) must not pick up a connection
/// whose task lives on a runtime that is blocked waiting for it, or already gone: give it its
/// own pool with this.
pub fn own_http_client(config: &SdkConfig) -> SdkConfig {
    use aws_smithy_http_client::tls;
    let client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
        .build_https();
    config.to_builder().http_client(client).build()
}

/// Counts the HTTP requests clients send (retries included), by `Service.Operation`.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl RequestCounter {
    /// Requests per `Service.Operation` so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// All requests so far.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Requests whose operation satisfies `which` (say, read calls: `Describe*`, `Get*`, `List*`, `Head*`).
    pub fn count(&self, which: impl Fn(&str) -> bool) -> u64 {
        self.snapshot().iter().filter(|(op, _)| which(op.rsplit('.').next().unwrap_or(op))).map(|(_, n)| n).sum()
    }

    /// Forgets the counts.
    pub fn reset(&self) {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let name = cfg
            .load::<Metadata>()
            .map(|m| format!("{}.{}", m.service(), m.name()))
            .unwrap_or_else(|| "unknown".to_owned());
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()).entry(name).or_default() += 1;
        Ok(())
    }
}

/// What an AWS error means for the user, decided from its code and HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Too many requests; retry later (the SDK already retried).
    Throttled,
    /// The credentials may not do this.
    AccessDenied,
    /// No credentials were found.
    NoCredentials,
    /// The credentials have expired (an SSO session, say).
    ExpiredCredentials,
    /// What was asked for does not exist.
    NotFound,
    /// The endpoint could not be reached.
    Unreachable,
    /// The service failed (5xx).
    ServiceError,
    /// Anything else: the error's own message says what.
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Throttled => "throttled by AWS; try again later or lower the parallelism",
            ErrorKind::AccessDenied => "access denied; the role needs the permission named in the error",
            ErrorKind::NoCredentials => {
                "no AWS credentials found; set AWS_PROFILE, run `aws sso login`, or export AWS_ACCESS_KEY_ID"
            }
            ErrorKind::ExpiredCredentials => "the AWS credentials have expired; log in again (`aws sso login`)",
            ErrorKind::NotFound => "not found",
            ErrorKind::Unreachable => {
                "the AWS endpoint cannot be reached; check the network, the region and --endpoint-url"
            }
            ErrorKind::ServiceError => "AWS failed to answer (a 5xx); try again",
            ErrorKind::Other => "AWS refused the request",
        })
    }
}

/// A refusal said so the user knows what to grant: `role X lacks action Y on Z`. Built once an
/// error's code said AccessDenied ([`ErrorKind::of`]), from what the caller knows: the role it
/// acts as (when the config names one), the operation it called and what it was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The role the call was made as; `None` when only the credentials' chain knows it.
    pub role: Option<String>,
    /// The IAM action ([`iam_action`]): `cloudformation:CreateChangeSet`, `s3:GetObject`.
    pub action: String,
    /// What the call was about: a stack, a bucket, a key.
    pub resource: String,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.role {
            Some(role) => write!(f, "role {role} lacks action {} on {}", self.action, self.resource),
            None => write!(
                f,
                "the role these credentials act as lacks action {} on {}; grant it",
                self.action, self.resource
            ),
        }
    }
}

/// The IAM action an SDK operation is authorized as: `service:Operation` for most, S3's reads and
/// lists under the action IAM checks (`HeadObject` is `s3:GetObject`, `HeadBucket` and
/// `ListObjectsV2` are `s3:ListBucket`, `DeleteObjects` is `s3:DeleteObject`).
pub fn iam_action(service: &str, operation: &str) -> String {
    let service = service.to_ascii_lowercase();
    let operation = match (service.as_str(), operation) {
        ("s3", "HeadObject") => "GetObject",
        ("s3", "HeadBucket" | "ListObjectsV2" | "ListObjects") => "ListBucket",
        ("s3", "DeleteObjects") => "DeleteObject",
        ("s3", "CreateMultipartUpload" | "UploadPart" | "CompleteMultipartUpload" | "CopyObject") => "PutObject",
        ("s3", "AbortMultipartUpload") => "AbortMultipartUpload",
        ("s3", "GetPublicAccessBlock") => "GetBucketPublicAccessBlock",
        (_, operation) => operation,
    };
    format!("{service}:{operation}")
}

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "TooManyInvalidationsInProgress",
];
const DENIED: &[&str] = &["AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"];
const EXPIRED: &[&str] =
    &["ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId", "UnrecognizedClientException"];
const NOT_FOUND: &[&str] = &[
    "NotFound",
    "NoSuchKey",
    "NoSuchBucket",
    "ResourceNotFoundException",
    "NoSuchDistribution",
    "ChangeSetNotFound",
    "ChangeSetNotFoundException",
    "StackNotFoundException",
];

impl ErrorKind {
    /// Whether asking again may succeed: throttling, a 5xx, or the network (unreachable, a
    /// connection cut, an answer that did not arrive whole or in time). A write asked again
    /// may run twice: only reads, or writes whose effect the caller checks, should be.
    pub fn is_transient<E, R>(error: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> bool
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug + 'static,
    {
        use aws_smithy_runtime_api::client::result::SdkError;
        matches!(ErrorKind::of(error), ErrorKind::Throttled | ErrorKind::Unreachable | ErrorKind::ServiceError)
            || matches!(error, SdkError::DispatchFailure(_) | SdkError::ResponseError(_) | SdkError::TimeoutError(_))
    }

    /// Sorts an SDK error.
    pub fn of<E, R>(error: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> ErrorKind
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug + 'static,
    {
        use aws_smithy_runtime_api::client::result::SdkError;
        match error {
            SdkError::ServiceError(service) => {
                ErrorKind::from_code(service.err().code().unwrap_or_default(), http_status(error))
            }
            // A connection refused, timed out, or cut before the answer came (the connector's
            // transient errors): the network, not AWS, failed.
            SdkError::DispatchFailure(dispatch)
                if dispatch.is_io()
                    || dispatch.is_timeout()
                    || dispatch.as_other() == Some(aws_smithy_types::retry::ErrorKind::TransientError) =>
            {
                ErrorKind::Unreachable
            }
            SdkError::TimeoutError(_) => ErrorKind::Unreachable,
            SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => {
                // Missing credentials surface here, before a request is sent: the credentials
                // provider's own error is in the source chain.
                // Only a provider that found nothing is "no credentials": a role STS refused or a
                // bad profile is the provider's own error, shown by the chain after the message.
                match credentials_error(error) {
                    Some(CredentialsError::CredentialsNotLoaded(_)) => ErrorKind::NoCredentials,
                    Some(CredentialsError::ProviderTimedOut(_)) => ErrorKind::Unreachable,
                    _ => ErrorKind::Other,
                }
            }
            _ => ErrorKind::Other,
        }
    }

    /// Sorts an error from its code (`ThrottlingException`) and HTTP status.
    pub fn from_code(code: &str, status: Option<u16>) -> ErrorKind {
        if THROTTLING.contains(&code) || status == Some(429) {
            ErrorKind::Throttled
        } else if DENIED.contains(&code) || status == Some(403) && EXPIRED.iter().all(|c| *c != code) {
            ErrorKind::AccessDenied
        } else if EXPIRED.contains(&code) {
            ErrorKind::ExpiredCredentials
        } else if NOT_FOUND.contains(&code) || status == Some(404) {
            ErrorKind::NotFound
        } else if status.is_some_and(|s| s >= 500) {
            ErrorKind::ServiceError
        } else {
            ErrorKind::Other
        }
    }
}

/// The HTTP status of the response an error came with, from the typed response (every SDK
/// client's `R` is [`HttpResponse`]); `None` without a response.
fn http_status<E, R: 'static>(error: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> Option<u16> {
    let raw: &dyn std::any::Any = error.raw_response()?;
    raw.downcast_ref::<HttpResponse>().map(|response| response.status().as_u16())
}

/// The credentials provider's error (no profile, no SSO session, a role that cannot be assumed)
/// in an error's source chain.
fn credentials_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a CredentialsError> {
    std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref::<CredentialsError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        for good in ["us-east-1", "eu-central-2", "us-gov-west-1", "cn-north-1", "ap-southeast-5"] {
            assert!(is_region_name(good), "{good}");
        }
        for bad in ["us-east1", "useast1", "US-EAST-1", "us-east-", "", "us east 1", "eu-west-a"] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[test]
    fn codes_sort_into_kinds() {
        assert_eq!(ErrorKind::from_code("ThrottlingException", Some(400)), ErrorKind::Throttled);
        assert_eq!(ErrorKind::from_code("Throttling", Some(400)), ErrorKind::Throttled);
        assert_eq!(ErrorKind::from_code("SlowDown", Some(503)), ErrorKind::Throttled);
        assert_eq!(ErrorKind::from_code("AccessDenied", Some(403)), ErrorKind::AccessDenied);
        assert_eq!(ErrorKind::from_code("ExpiredToken", Some(403)), ErrorKind::ExpiredCredentials);
        assert_eq!(ErrorKind::from_code("NoSuchBucket", Some(404)), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_code("", Some(404)), ErrorKind::NotFound);
        assert_eq!(ErrorKind::from_code("InternalError", Some(500)), ErrorKind::ServiceError);
        assert_eq!(ErrorKind::from_code("ValidationError", Some(400)), ErrorKind::Other);
    }

    #[test]
    fn a_refusal_names_the_role_the_action_and_the_resource() {
        assert_eq!(iam_action("CloudFormation", "CreateChangeSet"), "cloudformation:CreateChangeSet");
        assert_eq!(iam_action("s3", "HeadObject"), "s3:GetObject");
        assert_eq!(iam_action("S3", "HeadBucket"), "s3:ListBucket");
        let denied = Denied {
            role: Some("arn:aws:iam::111111111111:role/deploy".into()),
            action: iam_action("cloudformation", "CreateChangeSet"),
            resource: "app-prod".into(),
        };
        assert_eq!(
            denied.to_string(),
            "role arn:aws:iam::111111111111:role/deploy lacks action cloudformation:CreateChangeSet on app-prod"
        );
        let unnamed = Denied { role: None, ..denied };
        assert!(
            unnamed.to_string().starts_with(
                "the role these credentials act as lacks action cloudformation:CreateChangeSet on app-prod"
            )
        );
    }

    #[test]
    fn status_is_read_from_the_typed_raw_response() {
        use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError;
        use aws_smithy_runtime_api::client::result::SdkError;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;
        let unknown = || GetCallerIdentityError::generic(ErrorMetadata::builder().build());
        let response = HttpResponse::new(404.try_into().unwrap(), SdkBody::empty());
        let error = SdkError::service_error(unknown(), response);
        assert_eq!(http_status(&error), Some(404));
        assert_eq!(ErrorKind::of(&error), ErrorKind::NotFound);
        // A response of another type than the SDK's carries no status this can read.
        let other: SdkError<_, String> = SdkError::service_error(unknown(), "HTTP/1.1 404".to_string());
        assert_eq!(http_status(&other), None);
        assert_eq!(ErrorKind::of(&other), ErrorKind::Other);
    }

    /// Classification of recorded STS responses and a failing credentials provider, through
    /// [`identity`]: the one-line message a user sees, the typed cause in `source()` only.
    mod recorded {
        use aws_credential_types::Credentials;
        use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
        use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError;
        use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
        use aws_smithy_runtime_api::client::result::SdkError;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::retry::RetryConfig;

        use super::super::*;

        fn config(credentials: impl ProvideCredentials + 'static) -> SdkConfig {
            SdkConfig::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .credentials_provider(SharedCredentialsProvider::new(credentials))
                .retry_config(RetryConfig::disabled())
                .http_client(create_mock_http_client())
                .build()
        }

        fn fixed() -> Credentials {
            Credentials::new("AKIDEXAMPLE", "not-a-secret", None, None, "test")
        }

        /// STS's answer to `GetCallerIdentity`: `status` with an error `code`, as recorded.
        fn refusal(status: u16, code: &'static str) -> Rule {
            mock!(aws_sdk_sts::Client::get_caller_identity).then_http_response(move || {
                let body = format!(
                    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
                     <Code>{code}</Code><Message>{MESSAGE}</Message></Error>\
                     <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"
                );
                HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body))
            })
        }

        const MESSAGE: &str =
            "User: arn:aws:iam::111111111111:user/dev is not authorized to perform: sts:GetCallerIdentity";

        async fn identity_with(config: &SdkConfig, rule: &Rule) -> Result<Identity, Error> {
            let mocks = MockResponseInterceptor::new().rule_mode(RuleMode::Sequential).with_rule(rule);
            let sts =
                aws_sdk_sts::Client::from_conf(aws_sdk_sts::config::Builder::from(config).interceptor(mocks).build());
            identity_from(&sts, config).await
        }

        /// The message, and the STS error in `source()`; the cause's text is not in the message.
        fn split(error: &Error) -> (String, &SdkError<GetCallerIdentityError, HttpResponse>) {
            let top = error.to_string();
            assert_eq!(top.lines().count(), 1, "{top}");
            let source = std::error::Error::source(error).expect("a source");
            let sdk = source.downcast_ref::<SdkError<GetCallerIdentityError, HttpResponse>>().expect("the SDK error");
            assert!(!top.contains(&sdk.to_string()), "{top}");
            (top, sdk)
        }

        #[tokio::test]
        async fn a_recorded_403_access_denied_is_access_denied() {
            let error = identity_with(&config(fixed()), &refusal(403, "AccessDenied")).await.unwrap_err();
            let Error::Identity { kind, .. } = &error else { panic!("{error:?}") };
            assert_eq!(*kind, ErrorKind::AccessDenied);
            let (top, sdk) = split(&error);
            assert_eq!(
                top,
                "cannot tell which AWS account these credentials reach (access denied; the role needs the permission named in the error)"
            );
            assert!(!top.contains(MESSAGE));
            assert_eq!(http_status(sdk), Some(403));
            assert_eq!(sdk.as_service_error().and_then(|e| e.code()), Some("AccessDenied"));
            assert_eq!(sdk.as_service_error().and_then(|e| e.message()), Some(MESSAGE));
        }

        #[tokio::test]
        async fn the_code_outranks_the_status_and_the_status_stands_alone() {
            let expired = identity_with(&config(fixed()), &refusal(403, "ExpiredToken")).await.unwrap_err();
            assert!(matches!(expired, Error::Identity { kind: ErrorKind::ExpiredCredentials, .. }), "{expired:?}");
            assert_eq!(
                split(&expired).0,
                "cannot tell which AWS account these credentials reach (the AWS credentials have expired; log in again (`aws sso login`))"
            );
            let throttled = identity_with(&config(fixed()), &refusal(400, "Throttling")).await.unwrap_err();
            assert!(matches!(throttled, Error::Identity { kind: ErrorKind::Throttled, .. }), "{throttled:?}");
            // No code STS lists: a 403 alone is a refusal.
            let unnamed = identity_with(&config(fixed()), &refusal(403, "SignatureDoesNotMatch")).await.unwrap_err();
            assert!(matches!(unnamed, Error::Identity { kind: ErrorKind::AccessDenied, .. }), "{unnamed:?}");
        }

        #[derive(Debug)]
        struct NoProfile;

        impl ProvideCredentials for NoProfile {
            fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
                    "the profile `dev` has no credentials",
                )))
            }
        }

        #[tokio::test]
        async fn a_credentials_provider_failure_is_no_credentials() {
            let error = identity(&config(NoProfile)).await.unwrap_err();
            let Error::Identity { kind, .. } = &error else { panic!("{error:?}") };
            assert_eq!(*kind, ErrorKind::NoCredentials);
            let (top, sdk) = split(&error);
            assert_eq!(
                top,
                "cannot tell which AWS account these credentials reach (no AWS credentials found; set AWS_PROFILE, run `aws sso login`, or export AWS_ACCESS_KEY_ID)"
            );
            assert!(matches!(sdk, SdkError::DispatchFailure(_)), "{sdk:?}");
            let credentials = credentials_error(sdk).expect("the provider's error in the chain");
            assert!(matches!(credentials, CredentialsError::CredentialsNotLoaded(_)), "{credentials:?}");
        }

        #[tokio::test]
        async fn a_refused_connection_is_unreachable() {
            // Port 1 on loopback: nothing listens, the connection is refused at once.
            let config = SdkConfig::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .endpoint_url("http://127.0.0.1:1")
                .credentials_provider(SharedCredentialsProvider::new(fixed()))
                .retry_config(RetryConfig::disabled())
                .build();
            let error = identity(&config).await.unwrap_err();
            assert!(matches!(error, Error::Identity { kind: ErrorKind::Unreachable, .. }), "{error:?}");
            let (_, sdk) = split(&error);
            assert!(matches!(sdk, SdkError::DispatchFailure(d) if d.is_io()), "{sdk:?}");
        }
    }
}
