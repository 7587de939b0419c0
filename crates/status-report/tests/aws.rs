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

/// `record` of api's test of run r1 as running, once it finished.
fn record_running_again(root: &Path) -> Output {
    let args = ["record", "--run", "r1", "--commit", "c0ffee1234567890", "--component", "api"];
    status_report(root, &[&args[..], &["--step", "test", "--status", "running"]].concat())
}

/// The first notification the HTTP subscriber receives (after moto's subscription
/// confirmation, if any).
fn notification(received: &std::sync::mpsc::Receiver<String>) -> serde_json::Value {
    loop {
        let body = received.recv_timeout(Duration::from_secs(10)).expect("no SNS notification arrived");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        if json["Type"] == "Notification" {
            return json;
        }
    }
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
        move || record_running_again(&root)
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
    let notification = notification(&received);
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

/// The template's value of `node` as JSON, `!Sub` strings with the stack's name and region
/// put in (what CloudFormation resolves them to).
fn resolved(node: &cfn_template::Node) -> serde_json::Value {
    use cfn_template::Value;
    // cfn/pipeline-monitoring.yaml is deployed with the pipeline stack's name (`PipelineStackName`).
    let sub = |text: &str| {
        text.replace("${AWS::StackName}", "app-pipeline")
            .replace("${PipelineStackName}", "app-pipeline")
            .replace("${AWS::Region}", "eu-west-1")
    };
    match &node.value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => n.parse::<f64>().map(serde_json::Value::from).unwrap(),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Seq(items) => items.iter().map(resolved).collect(),
        Value::Map(_) if node.get("Fn::Sub").and_then(|s| s.as_str()).is_some() => {
            serde_json::Value::String(sub(node.get("Fn::Sub").unwrap().as_str().unwrap()))
        }
        Value::Map(entries) => entries.iter().map(|(k, v)| (k.name.clone(), resolved(v))).collect(),
    }
}

/// A datum as sent: its namespace, name and dimensions (name, value).
type Sent = (String, String, Vec<(String, String)>);

/// What `status-report metrics` sends for two runs through every stage, one passing all, one
/// failing all, as the recorded PutMetricData requests saw it: (namespace, name, dimensions).
async fn sent_metrics(namespace: &str) -> std::collections::BTreeSet<Sent> {
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use run_state::{Coverage, PIPELINE, Ratio, Status, Step, StepRecord};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let log = seen.clone();
    let put = mock!(aws_sdk_cloudwatch::Client::put_metric_data)
        .match_requests(move |request| {
            for datum in request.metric_data() {
                let dimensions = datum
                    .dimensions()
                    .iter()
                    .map(|d| (d.name().unwrap_or_default().to_string(), d.value().unwrap_or_default().to_string()))
                    .collect();
                let name = datum.metric_name().unwrap_or_default().to_string();
                log.lock().unwrap().insert((request.namespace().unwrap_or_default().to_string(), name, dimensions));
            }
            true
        })
        .then_output(|| aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataOutput::builder().build());
    let client = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&put]);
    let start = std::time::SystemTime::now() - Duration::from_secs(3600);
    for status in [Status::Passed, Status::Failed] {
        let steps = [
            (PIPELINE, Step::Diff),
            (PIPELINE, Step::Validate),
            ("api", Step::Build),
            ("api", Step::Test),
            ("api", Step::Deploy),
            ("api", Step::E2e),
            ("api", Step::ProdDeploy),
        ];
        let records: Vec<StepRecord> = steps
            .iter()
            .enumerate()
            .map(|(i, (component, step))| {
                let mut record = StepRecord::new("r1", "abc", component, *step, status);
                record.started_at = Some(start + Duration::from_secs(i as u64 * 60));
                record.ended_at = Some(start + Duration::from_secs(i as u64 * 60 + 30));
                if *step == Step::Test {
                    let lines = Ratio { covered: 8, total: 10 };
                    record.details.coverage = Some(Box::new(Coverage { lines, ..Coverage::default() }));
                }
                record
            })
            .collect();
        let metrics = status_report::notify::metrics(&records);
        status_report::notify::put_metrics(&client, namespace, &metrics).await.unwrap();
    }
    seen.lock().unwrap().clone()
}

/// A dashboard metric (`[NAMESPACE, NAME, DIMENSION, VALUE, …, {options}]`) as what was sent.
fn charted(metric: &serde_json::Value) -> Option<Sent> {
    let parts = metric.as_array().unwrap();
    let namespace = parts[0].as_str()?.to_string();
    let strings: Vec<String> = parts[2..].iter().filter_map(|p| p.as_str()).map(str::to_string).collect();
    let dimensions = strings.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
    Some((namespace, parts[1].as_str().unwrap().to_string(), dimensions))
}

/// Recorded responses again (moto does not speak CloudWatch's CBOR protocol):
/// cfn/pipeline-monitoring.yaml's dashboard is the body `status-report dashboard` prints for the namespace the Status project
/// gives `status-report metrics`, and every metric a chart or an alarm reads (namespace, name,
/// dimensions and their values) is one `metrics` sends; each alarm notifies the topic, whose
/// key and policy let CloudWatch publish.
#[tokio::test]
async fn the_pipeline_templates_dashboard_and_alarms_read_what_status_report_metrics_sends() {
    let read = |name: &str| {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cfn").join(name));
        cfn_template::parse(&text.unwrap()).unwrap()
    };
    let (template, monitoring) = (read("pipeline.yaml"), read("pipeline-monitoring.yaml"));
    let resources = template.get("Resources").unwrap();
    let resource = |id: &str| resolved(resources.get(id).unwrap_or_else(|| panic!("no {id} in the template")));
    let watching = monitoring.get("Resources").unwrap();
    let watch = |id: &str| resolved(watching.get(id).unwrap_or_else(|| panic!("no {id} in the monitoring template")));
    let variables = &resource("StatusProject")["Properties"]["Environment"]["EnvironmentVariables"];
    let namespace = variables.as_array().unwrap().iter().find(|v| v["Name"] == "METRICS_NAMESPACE").unwrap()["Value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(namespace, "Pipeline/app-pipeline");
    let sent = sent_metrics(&namespace).await;

    let outputs = resolved(template.get("Outputs").unwrap());
    assert_eq!(outputs["NotificationTopicArn"]["Value"], serde_json::json!({"Ref": "NotificationTopic"}));
    let dashboard = watch("PipelineDashboard");
    let body: serde_json::Value =
        serde_json::from_str(dashboard["Properties"]["DashboardBody"].as_str().unwrap()).unwrap();
    let printed: serde_json::Value =
        serde_json::from_str(&status_report::dashboard::body(&namespace, "eu-west-1")).unwrap();
    assert_eq!(body, printed, "the template's dashboard is not what `status-report dashboard` prints");
    let mut read = 0;
    for widget in body["widgets"].as_array().unwrap() {
        for metric in widget["properties"]["metrics"].as_array().unwrap() {
            if let Some(metric) = charted(metric) {
                assert!(sent.contains(&metric), "the dashboard reads {metric:?}, which metrics never sends");
                read += 1;
            }
        }
    }
    assert_eq!(read, 2 + 3 * status_report::dashboard::STAGES.len());

    // The alarms: each notifies the topic; each metric it reads is sent.
    let mut alarms = Vec::new();
    let mut alarm_reads = 0;
    for (key, node) in watching.entries() {
        let id = &key.name;
        if node.get("Type").and_then(|t| t.as_str()) != Some("AWS::CloudWatch::Alarm") {
            continue;
        }
        let alarm = resolved(node);
        // The topic cfn/pipeline.yaml outputs, passed as a parameter.
        assert_eq!(alarm["Properties"]["AlarmActions"], serde_json::json!([{"Ref": "NotificationTopicArn"}]), "{id}");
        for query in alarm["Properties"]["Metrics"].as_array().unwrap() {
            let Some(metric) = query.get("MetricStat").map(|m| &m["Metric"]) else { continue };
            let dimensions = metric["Dimensions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| (d["Name"].as_str().unwrap().to_string(), d["Value"].as_str().unwrap().to_string()))
                .collect();
            let read = (
                metric["Namespace"].as_str().unwrap().to_string(),
                metric["MetricName"].as_str().unwrap().to_string(),
                dimensions,
            );
            assert!(sent.contains(&read), "alarm {id} reads {read:?}, which metrics never sends");
            alarm_reads += 1;
        }
        alarms.push(id.clone());
    }
    assert_eq!(alarms, ["FailureRateAlarm", "BuildDurationAlarm", "TestDurationAlarm", "DeployDurationAlarm"]);
    // The failure rate: the runs (diff passed, failed) and five stages' failures; a stage's span each.
    assert_eq!(alarm_reads, 2 + 5 + 3);
    // CloudWatch may publish to the topic and use its key.
    let allowed = |policy: serde_json::Value| {
        policy["Statement"].as_array().unwrap().iter().any(|s| {
            s["Principal"]["Service"]
                .as_array()
                .is_some_and(|services| services.contains(&"cloudwatch.amazonaws.com".into()))
        })
    };
    assert!(allowed(resource("NotificationTopicPolicy")["Properties"]["PolicyDocument"].clone()));
    assert!(allowed(resource("NotificationKey")["Properties"]["KeyPolicy"].clone()));
}
