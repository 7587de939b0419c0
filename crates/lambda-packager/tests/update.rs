//! Updating function code only when it changed: against moto through the real
//! SDK, and, for what moto does not do (updates that fail or never finish),
//! against recorded responses shaped like AWS's.

use std::path::Path;
use std::time::Duration;

use aws_sdk_lambda::types::{FunctionCode, LastUpdateStatus, Runtime};
use base64::Engine;
use lambda_packager::update::{self, CodeSource, CodeUpdateOutcome, RateLimiter, UpdateError};
use lambda_packager::{Architecture, Entry, Package, archive};

/// A one-file package whose handler returns `body`.
fn package(dir: &Path, name: &str, body: &str) -> Package {
    let source = dir.join(format!("{name}.py"));
    std::fs::write(&source, format!("def handler(event, context):\n    return {body:?}\n")).unwrap();
    let bytes = std::fs::read(&source).unwrap();
    let entry = Entry {
        zip_path: "index.py".into(),
        source: source.clone(),
        mode: 0o644,
        size: bytes.len() as u64,
        sha256: sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes)).into(),
    };
    let path = dir.join(format!("{name}.zip"));
    let written = archive::write_zip(&path, &[entry], None).unwrap();
    Package {
        name: name.into(),
        path,
        code_sha256: base64::engine::general_purpose::STANDARD.encode(written.sha256),
        sha256: String::new(),
        size: written.size,
        unzipped_size: bytes.len() as u64,
        files: 1,
        runtime: "python3.12".into(),
        architecture: Architecture::X86_64,
        input_hash: String::new(),
        reused: false,
        changed: true,
    }
}

#[tokio::test]
async fn code_is_updated_only_when_its_hash_differs() {
    let moto = test_support::Moto::shared();
    let config = moto.sdk_config().await;
    let lambda = aws_sdk_lambda::Client::new(&config);
    let iam = aws_sdk_iam::Client::new(&config);
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
    let dir = tempfile::tempdir().unwrap();
    let v1 = package(dir.path(), "v1", "one");
    let v2 = package(dir.path(), "v2", "two");
    let v3 = package(dir.path(), "v3", "three");

    let role = iam
        .create_role()
        .role_name("packager-update-test")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#)
        .send()
        .await
        .unwrap();
    let function = "packager-update-test";
    lambda
        .create_function()
        .function_name(function)
        .runtime(Runtime::Python312)
        .handler("index.handler")
        .role(role.role().unwrap().arn())
        .code(FunctionCode::builder().zip_file(std::fs::read(&v1.path).unwrap().into()).build())
        .send()
        .await
        .unwrap();
    let limiter = RateLimiter::per_second(50);
    let wait = Duration::from_secs(30);

    // Same code: the plan says so and nothing is called.
    let plan = update::plan(&lambda, &limiter, function, &v1).await.unwrap();
    assert_eq!(plan.current, v1.code_sha256);
    assert!(!plan.needs_update());
    assert_eq!(
        update::apply(&lambda, &limiter, &plan, &CodeSource::Inline, wait).await.unwrap(),
        CodeUpdateOutcome::Unchanged
    );

    // New code inline.
    let outcome = update::update_if_changed(&lambda, &limiter, function, &v2, &CodeSource::Inline, wait).await.unwrap();
    assert_eq!(outcome, CodeUpdateOutcome::Updated { code_sha256: v2.code_sha256.clone() });
    let now = lambda.get_function_configuration().function_name(function).send().await.unwrap();
    assert_eq!(now.code_sha256(), Some(v2.code_sha256.as_str()));

    // New code from S3.
    s3.create_bucket().bucket("packager-update-artifacts").send().await.unwrap();
    s3.put_object()
        .bucket("packager-update-artifacts")
        .key("v3.zip")
        .body(std::fs::read(&v3.path).unwrap().into())
        .send()
        .await
        .unwrap();
    let from_s3 = CodeSource::S3 { bucket: "packager-update-artifacts".into(), key: "v3.zip".into() };
    let outcome = update::update_if_changed(&lambda, &limiter, function, &v3, &from_s3, wait).await.unwrap();
    assert_eq!(outcome, CodeUpdateOutcome::Updated { code_sha256: v3.code_sha256.clone() });

    // A missing object: AWS refuses the call; moto accepts it and reports an
    // empty CodeSha256. Either way the update must not pass as done.
    let missing = CodeSource::S3 { bucket: "packager-update-artifacts".into(), key: "missing.zip".into() };
    let error = update::update_if_changed(&lambda, &limiter, function, &v1, &missing, wait).await.unwrap_err();
    assert!(matches!(error, UpdateError::HashMismatch { .. } | UpdateError::Aws { .. }), "{error}");
}

mod recorded {
    //! Recorded responses shaped like AWS's (aws-smithy-mocks): moto's updates
    //! always succeed at once, so the failed and never-ending paths are tested here.

    use super::*;
    use aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationOutput;
    use aws_sdk_lambda::operation::update_function_code::UpdateFunctionCodeOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn config(sha: &str, status: Option<LastUpdateStatus>, reason: Option<&str>) -> GetFunctionConfigurationOutput {
        GetFunctionConfigurationOutput::builder()
            .function_name("api")
            .code_sha256(sha)
            .set_last_update_status(status)
            .set_last_update_status_reason(reason.map(str::to_string))
            .build()
    }

    #[tokio::test]
    async fn a_failed_update_reports_lambdas_reason() {
        let dir = tempfile::tempdir().unwrap();
        let new = package(dir.path(), "new", "v2");
        let before = mock!(aws_sdk_lambda::Client::get_function_configuration)
            .then_output(|| config("old-sha=", Some(LastUpdateStatus::Successful), None));
        let update = mock!(aws_sdk_lambda::Client::update_function_code)
            .then_output(|| UpdateFunctionCodeOutput::builder().function_name("api").build());
        let in_progress = mock!(aws_sdk_lambda::Client::get_function_configuration)
            .then_output(|| config("old-sha=", Some(LastUpdateStatus::InProgress), None));
        let failed = mock!(aws_sdk_lambda::Client::get_function_configuration).then_output(|| {
            config(
                "old-sha=",
                Some(LastUpdateStatus::Failed),
                Some("Lambda was unable to decrypt the environment variables because KMS access was denied."),
            )
        });
        let client = mock_client!(aws_sdk_lambda, RuleMode::Sequential, [&before, &update, &in_progress, &failed]);
        let limiter = RateLimiter::per_second(1000);
        let error =
            update::update_if_changed(&client, &limiter, "api", &new, &CodeSource::Inline, Duration::from_secs(30))
                .await
                .unwrap_err();
        assert_eq!(
            error.to_string(),
            "updating api failed: Lambda was unable to decrypt the environment variables because KMS access was denied."
        );
        assert_eq!(update.num_calls(), 1);
    }

    #[tokio::test]
    async fn an_update_that_never_finishes_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let new = package(dir.path(), "new", "v2");
        let update = mock!(aws_sdk_lambda::Client::update_function_code)
            .then_output(|| UpdateFunctionCodeOutput::builder().function_name("api").build());
        let stuck = mock!(aws_sdk_lambda::Client::get_function_configuration)
            .then_output(|| config("old-sha=", Some(LastUpdateStatus::InProgress), None));
        let client = mock_client!(aws_sdk_lambda, RuleMode::MatchAny, [&update, &stuck]);
        let limiter = RateLimiter::per_second(1000);
        let plan = update::CodeUpdatePlan {
            function: "api".into(),
            current: "old-sha=".into(),
            wanted: new.code_sha256.clone(),
            package: new.path.clone(),
        };
        let error =
            update::apply(&client, &limiter, &plan, &CodeSource::Inline, Duration::from_millis(600)).await.unwrap_err();
        assert!(matches!(error, UpdateError::TimedOut { .. }), "{error}");
        assert!(stuck.num_calls() >= 2, "it polled until the deadline");
    }
}
