//! The binary against moto: steps recorded in a DynamoDB store (`--store dynamodb://…`), the
//! report published to SNS (received by an HTTP subscriber on loopback), and a missing table.
//! CloudWatch metrics with recorded responses: the SDK speaks CloudWatch's RPCv2 CBOR protocol,
//! which moto 5.2.5 does not answer (it returns an XML 404).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use test_support::Moto;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn status_report(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_status-report"))
        .arg("--repo")
        .arg(repo)
        .args(["--endpoint-url", &Moto::shared().endpoint, "--region", "us-east-1"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("PIPELINE_STORE")
        .output()
        .unwrap()
}

fn ok(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_recorded_in_dynamodb_is_published_to_sns() {
    let moto = Moto::shared();
    let config = moto.sdk_config().await;
    run_state::DynamoStore::create_table(&aws_sdk_dynamodb::Client::new(&config), "status-report-binary")
        .await
        .unwrap();
    let sns = aws_sdk_sns::Client::new(&config);
    let topic = sns.create_topic().name("pipeline-events").send().await.unwrap().topic_arn.unwrap();
    let (url, received) = test_support::http_sink();
    sns.subscribe().topic_arn(&topic).protocol("http").endpoint(&url).send().await.unwrap();

    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("pipeline.toml"),
        format!("[store]\ndynamodb_table = \"status-report-binary\"\n\n[notify]\ntopic_arn = \"{topic}\"\nmetrics_namespace = \"Pipeline/Test\"\n"),
    )
    .unwrap();
    let log = repo.path().join("api-test.log");
    std::fs::write(&log, format!("running tests\nAWS_SECRET_ACCESS_KEY={SECRET}\n1 failed\n")).unwrap();
    let root = repo.path().to_path_buf();
    let record = move |component: &str, step: &str, status: &str, extra: &[&str]| {
        let mut args = vec!["record", "--run", "r1", "--commit", "c0ffee1234567890", "--component", component];
        args.extend(["--step", step, "--status", status]);
        args.extend(extra);
        ok(&status_report(&root, &args));
    };
    let (root, log_arg) = (repo.path().to_path_buf(), log.to_str().unwrap().to_string());
    tokio::task::spawn_blocking(move || {
        record("api", "test", "running", &[]);
        record("api", "test", "failed", &["--log", &log_arg]);
        record("web", "test", "passed", &["--started"]);
    })
    .await
    .unwrap();

    // The records are in DynamoDB, not in a state file: the store named in [store] holds them.
    assert!(!root.join(".pipeline/state.jsonl").exists());
    let shown = tokio::task::spawn_blocking({
        let root = root.clone();
        move || ok(&status_report(&root, &["show", "--format", "json"]))
    })
    .await
    .unwrap();
    assert!(shown.contains(r#""status": "failed""#), "{shown}");
    // A finished step is not recorded again by a late writer: one error line, exit 2.
    let late = tokio::task::spawn_blocking({
        let root = root.clone();
        move || {
            status_report(
                &root,
                &[
                    "record",
                    "--run",
                    "r1",
                    "--commit",
                    "c0ffee1234567890",
                    "--component",
                    "api",
                    "--step",
                    "test",
                    "--status",
                    "running",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(late.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&late.stderr),
        "status-report: api test of run `r1` already finished (failed); a finished step is not recorded again\n"
    );

    let id = tokio::task::spawn_blocking({
        let root = root.clone();
        move || ok(&status_report(&root, &["notify", "--event", "failure"]))
    })
    .await
    .unwrap();
    assert!(!id.trim().is_empty());

    // The subscriber got the notification (after moto's subscription confirmation, if any).
    let notification = loop {
        let body = received.recv_timeout(Duration::from_secs(10)).expect("no SNS notification arrived");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        if json["Type"] == "Notification" {
            break json;
        }
    };
    assert_eq!(notification["Subject"], "Pipeline FAILED: run r1 (c0ffee123456)");
    let text = notification["Message"].as_str().unwrap();
    assert!(text.contains("api") && text.contains("1 failed"), "{text}");
    assert!(!text.contains(SECRET), "the secret reached SNS: {text}");
}

/// Recorded responses (aws-smithy-mocks): moto 5.2.5 does not speak the RPCv2 CBOR protocol the
/// CloudWatch SDK uses. What is checked is what we send: every finished step's outcome, the
/// duration where there is one, the three dimensions, the stage's outcome and span (dimension
/// Step, for the dashboard), at most 20 data a call.
#[tokio::test]
async fn metrics_are_sent_in_batches_with_their_dimensions() {
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use run_state::{Status, Step, StepRecord};

    let start = std::time::SystemTime::now() - Duration::from_secs(60);
    let records: Vec<StepRecord> = (0..12)
        .map(|i| {
            let mut record = StepRecord::new("r1", "abc", &format!("c{i:02}"), Step::Test, Status::Failed);
            record.started_at = Some(start);
            record.ended_at = Some(start + Duration::from_secs(i + 1));
            record
        })
        .collect();
    let metrics = status_report::notify::metrics(&records);
    // 12 steps × (outcome, duration), then the test stage: failed, over 12 seconds.
    assert_eq!(metrics.len(), 26);
    assert_eq!((metrics[24].name, metrics[25].name, metrics[25].value), ("StageOutcome", "StageDuration", 12.0));
    let put = mock!(aws_sdk_cloudwatch::Client::put_metric_data)
        .match_requests(|request| {
            request.namespace() == Some("Pipeline/Test")
                && request.metric_data().len() <= 20
                && request.metric_data().iter().all(|datum| {
                    let names: Vec<&str> = datum.dimensions().iter().filter_map(|d| d.name()).collect();
                    [&["Step", "Component", "Outcome"][..], &["Step", "Outcome"], &["Step"]].contains(&names.as_slice())
                        && datum.timestamp().is_some()
                })
        })
        .then_output(|| aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataOutput::builder().build());
    let client = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&put]);
    let sent = status_report::notify::put_metrics(&client, "Pipeline/Test", &metrics).await.unwrap();
    assert_eq!(sent, 26);
    assert_eq!(put.num_calls(), 2, "26 data in calls of at most 20");
    let first = &metrics[0];
    assert_eq!((first.name, first.value, first.unit), ("StepDuration", 1.0, "Seconds"));
}

#[test]
fn a_missing_status_table_is_one_line_naming_the_fix() {
    let repo = tempfile::tempdir().unwrap();
    let output = status_report(repo.path(), &["--store", "dynamodb://no-such-status-table", "runs"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "status-report: DynamoDB table `no-such-status-table` does not exist; create it with cfn/pipeline.yaml (StatusTable), or name another with --store dynamodb://TABLE, PIPELINE_STORE or `[store] dynamodb_table` in pipeline.toml\n"
    );
    assert!(output.stdout.is_empty());
    assert!(!repo.path().join(".pipeline").exists(), "nothing is written");
}
