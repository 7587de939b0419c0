//! Notifications (SNS) and metrics (CloudWatch) of a run.
//!
//! `[notify]` in `pipeline.toml` turns them on: `topic_arn` for a message on failure, on waiting
//! for approval and on success, `metrics_namespace` for the steps' durations and outcomes. Both
//! off when absent. What is sent is planned by pure functions ([`message`], [`metrics`]); the
//! `aws` feature adds [`publish`] and [`put_metrics`], which take the SDK clients.

use std::fmt;
use std::str::FromStr;

use run_state::{Status, StepRecord, redact};
use serde::Deserialize;

use crate::RunReport;

/// `[notify]`: where notifications and metrics go; each off when its key is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// The SNS topic that gets a message on failure, approval and success.
    #[serde(default)]
    pub topic_arn: Option<String>,
    /// The CloudWatch namespace of the step metrics (`Pipeline/MyRepo`).
    #[serde(default)]
    pub metrics_namespace: Option<String>,
}

impl NotifySettings {
    /// The section's name in `pipeline.toml`.
    pub const SECTION: &'static str = "notify";
}

/// Why a message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A step failed; the run stops.
    Failure,
    /// The run waits for a human's approval before production.
    Approval,
    /// The run reached its end.
    Success,
}

impl Event {
    /// The name on the command line and in the message.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Failure => "failure",
            Event::Approval => "approval",
            Event::Success => "success",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Event {
    type Err = String;
    fn from_str(text: &str) -> Result<Event, String> {
        match text {
            "failure" => Ok(Event::Failure),
            "approval" => Ok(Event::Approval),
            "success" => Ok(Event::Success),
            _ => Err(format!("unknown event `{text}`; expected one of: failure, approval, success")),
        }
    }
}

/// The largest SNS message body, in bytes (256 KiB).
pub const SNS_MESSAGE_LIMIT: usize = 256 * 1024;
/// The longest SNS subject, in characters.
pub const SNS_SUBJECT_LIMIT: usize = 100;

/// One SNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// One line of printable ASCII, at most [`SNS_SUBJECT_LIMIT`] characters.
    pub subject: String,
    /// The report as Markdown, secrets redacted, at most [`SNS_MESSAGE_LIMIT`] bytes.
    pub body: String,
}

/// The message for `event` about a run (pure): the subject names the event, the run and the
/// commit; the body is the report (Markdown), redacted and cut to fit SNS.
pub fn message(event: Event, report: &RunReport) -> Message {
    let what = match event {
        Event::Failure => "FAILED",
        Event::Approval => "waiting for approval",
        Event::Success => "succeeded",
    };
    let commit = run_state::prefix(&report.commit, 12);
    let subject: String = format!("Pipeline {what}: run {} ({commit})", report.run_id)
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .take(SNS_SUBJECT_LIMIT)
        .collect();
    let mut body = redact::redact(&format!("Pipeline {}: {what}\n\n{}", event, report.to_markdown()));
    if body.len() > SNS_MESSAGE_LIMIT {
        const CUT: &str = "\n\n[report cut to fit an SNS message; see the full report in the run folder]\n";
        let mut end = SNS_MESSAGE_LIMIT - CUT.len();
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
        body.push_str(CUT);
    }
    Message { subject, body }
}

/// One CloudWatch datum: a step's duration or outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// `StepDuration` (seconds) or `StepOutcome` (a count of 1).
    pub name: &'static str,
    /// The value.
    pub value: f64,
    /// `Seconds` or `Count`.
    pub unit: &'static str,
    /// `Step`, `Component` and `Outcome`.
    pub dimensions: Vec<(&'static str, String)>,
    /// When the step ended.
    pub at: Option<std::time::SystemTime>,
}

/// The metrics of a run's finished steps (pure): for each, `StepOutcome` = 1 and, when it has
/// a start and an end, `StepDuration` in seconds; dimensions Step, Component, Outcome; a test
/// step's `LineCoverage` in percent (dimension Component). Then per stage with a result,
/// `StageOutcome` = 1 (Step, Outcome `passed` or `failed`) and `StageDuration`, its span over
/// the components in seconds (Step): what [`crate::dashboard`] charts.
pub fn metrics(records: &[StepRecord]) -> Vec<Metric> {
    let mut out = Vec::new();
    for record in records.iter().filter(|r| r.status.is_final()) {
        let dimensions = vec![
            ("Step", record.step.as_str().to_string()),
            ("Component", record.component.clone()),
            ("Outcome", record.status.as_str().to_string()),
        ];
        if let (Some(start), Some(end)) = (record.started_at, record.ended_at)
            && record.status != Status::Skipped
        {
            let seconds = end.duration_since(start).unwrap_or_default().as_secs_f64();
            out.push(Metric {
                name: "StepDuration",
                value: seconds,
                unit: "Seconds",
                dimensions: dimensions.clone(),
                at: record.ended_at,
            });
        }
        out.push(Metric { name: "StepOutcome", value: 1.0, unit: "Count", dimensions, at: record.ended_at });
        if let Some(coverage) = record.details.coverage.as_deref()
            && let Some(percent) = coverage.lines.percent()
        {
            let dimensions = vec![("Component", record.component.clone())];
            out.push(Metric { name: "LineCoverage", value: percent, unit: "Percent", dimensions, at: record.ended_at });
        }
    }
    // Each stage over its components ([`crate::stats::stage_results`]): what the dashboard
    // charts per stage (dimension Step alone, so one series a stage).
    for (step, stage) in crate::stats::stage_results(records) {
        let Some(passed) = stage.result else { continue };
        let outcome = if passed { "passed" } else { "failed" };
        let dimensions = vec![("Step", step.as_str().to_string()), ("Outcome", outcome.to_string())];
        out.push(Metric { name: "StageOutcome", value: 1.0, unit: "Count", dimensions, at: stage.ended });
        if let Some(span) = stage.span {
            let dimensions = vec![("Step", step.as_str().to_string())];
            let value = span as f64 / 1000.0;
            out.push(Metric { name: "StageDuration", value, unit: "Seconds", dimensions, at: stage.ended });
        }
    }
    out
}

/// What went wrong sending a notification or metrics.
#[cfg(feature = "aws")]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SNS refused or could not be reached.
    #[error("cannot publish to SNS topic `{topic}` ({kind}); check [notify] topic_arn and the role's sns:Publish")]
    Publish {
        /// The topic.
        topic: String,
        /// What kind of failure.
        kind: aws_target::ErrorKind,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// CloudWatch refused or could not be reached.
    #[error(
        "cannot put metrics in CloudWatch namespace `{namespace}` ({kind}); check [notify] metrics_namespace and the role's cloudwatch:PutMetricData"
    )]
    Metrics {
        /// The namespace.
        namespace: String,
        /// What kind of failure.
        kind: aws_target::ErrorKind,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Publishes `message` to `topic_arn`; returns SNS's message id.
#[cfg(feature = "aws")]
pub async fn publish(client: &aws_sdk_sns::Client, topic_arn: &str, message: &Message) -> Result<String, Error> {
    let out =
        client.publish().topic_arn(topic_arn).subject(&message.subject).message(&message.body).send().await.map_err(
            |e| Error::Publish { topic: topic_arn.into(), kind: aws_target::ErrorKind::of(&e), source: e.into() },
        )?;
    Ok(out.message_id.unwrap_or_default())
}

/// Puts `metrics` in `namespace`, 20 data a call; returns how many were sent.
#[cfg(feature = "aws")]
pub async fn put_metrics(
    client: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    metrics: &[Metric],
) -> Result<usize, Error> {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
    for batch in metrics.chunks(20) {
        let data = batch
            .iter()
            .map(|m| {
                MetricDatum::builder()
                    .metric_name(m.name)
                    .value(m.value)
                    .unit(StandardUnit::from(m.unit))
                    .set_timestamp(m.at.map(aws_smithy_types::DateTime::from))
                    .set_dimensions(Some(
                        m.dimensions.iter().map(|(k, v)| Dimension::builder().name(*k).value(v).build()).collect(),
                    ))
                    .build()
            })
            .collect();
        client.put_metric_data().namespace(namespace).set_metric_data(Some(data)).send().await.map_err(|e| {
            Error::Metrics { namespace: namespace.into(), kind: aws_target::ErrorKind::of(&e), source: e.into() }
        })?;
    }
    Ok(metrics.len())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use run_state::Step;

    use super::*;
    use crate::{GatePolicy, decide};

    #[test]
    fn the_message_names_the_event_is_redacted_and_fits_sns() {
        let mut failed = StepRecord::new("r1", "0123456789abcdef", "api", Step::Test, Status::Failed);
        failed.details.log_tail =
            Some(format!("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n{}", "é".repeat(200_000)));
        let records = vec![failed];
        let gate = decide(&records, None, &GatePolicy::default());
        let report = RunReport::new("r1", records, gate);
        let message = message(Event::Failure, &report);
        assert_eq!(message.subject, "Pipeline FAILED: run r1 (0123456789ab)");
        assert!(message.body.starts_with("Pipeline failure: FAILED\n\n"), "{}", &message.body[..80]);
        assert!(!message.body.contains("wJalrXUtnFEMI"), "the secret reached the message");
        assert!(message.body.len() <= SNS_MESSAGE_LIMIT);
    }

    #[test]
    fn a_mistake_in_the_section_names_the_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, "[notify]\ntopic_arn = \"arn:aws:sns:us-east-1:1:t\"\ntopic = \"x\"\n").unwrap();
        let config = pipeline_config::ConfigFile::load(&path).unwrap();
        let error = config.section::<NotifySettings>(NotifySettings::SECTION).unwrap_err().to_string();
        assert!(error.contains("pipeline.toml:3: notify.topic"), "{error}");
        std::fs::write(&path, "[gate]\n").unwrap();
        let config = pipeline_config::ConfigFile::load(&path).unwrap();
        assert_eq!(config.section::<NotifySettings>(NotifySettings::SECTION).unwrap(), NotifySettings::default());
    }

    #[test]
    fn metrics_are_a_duration_and_an_outcome_per_finished_step() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut test = StepRecord::new("r1", "abc", "api", Step::Test, Status::Passed);
        test.started_at = Some(start);
        test.ended_at = Some(start + Duration::from_millis(2500));
        let running = StepRecord::new("r1", "abc", "web", Step::Test, Status::Running);
        let skipped = StepRecord::new("r1", "abc", "web", Step::Deploy, Status::Skipped);
        let metrics = metrics(&[test, running, skipped]);
        let names: Vec<(&str, f64, &str)> =
            metrics.iter().map(|m| (m.name, m.value, m.dimensions[1].1.as_str())).collect();
        assert_eq!(
            names[..3],
            [("StepDuration", 2.5, "api"), ("StepOutcome", 1.0, "api"), ("StepOutcome", 1.0, "web")]
        );
        assert_eq!(metrics[0].dimensions[2], ("Outcome", "passed".to_string()));
        // The test stage is not finished (web's test runs): no stage figures; deploy only skipped.
        assert_eq!(metrics.len(), 3);
    }

    #[test]
    fn stage_metrics_and_coverage_carry_the_dimensions_the_dashboard_charts() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let step = |component: &str, status, from: u64, secs: u64| {
            let mut record = StepRecord::new("r1", "abc", component, Step::Test, status);
            record.started_at = Some(start + Duration::from_secs(from));
            record.ended_at = Some(start + Duration::from_secs(from + secs));
            record
        };
        let mut api = step("api", Status::Passed, 0, 30);
        api.details.coverage = Some(Box::new(run_state::Coverage {
            lines: run_state::Ratio { covered: 3, total: 4 },
            ..run_state::Coverage::default()
        }));
        let metrics = metrics(&[api, step("web", Status::Failed, 10, 50)]);
        let find = |name: &str| metrics.iter().find(|m| m.name == name).unwrap();
        assert_eq!((find("LineCoverage").value, find("LineCoverage").unit), (75.0, "Percent"));
        assert_eq!(find("LineCoverage").dimensions, [("Component", "api".to_string())]);
        // The stage: first start to last end over api and web, failed because web failed.
        assert_eq!(find("StageDuration").value, 60.0);
        assert_eq!(find("StageDuration").dimensions, [("Step", "test".to_string())]);
        assert_eq!(find("StageOutcome").dimensions, [("Step", "test".to_string()), ("Outcome", "failed".to_string())]);
    }
}
