//! The CloudWatch dashboard of the metrics `status-report metrics` puts ([`crate::notify::metrics`]):
//! runs per day, success rate per stage, stage duration P95, line coverage per component.
//!
//! Pure: [`body`] returns the `DashboardBody` JSON, for `aws cloudwatch put-dashboard` or a
//! CloudFormation `AWS::CloudWatch::Dashboard` (`status-report dashboard` prints it).
//!
//! ```
//! let body = status_report::dashboard::body("Pipeline/MyRepo", "eu-west-1");
//! let json: serde_json::Value = serde_json::from_str(&body).unwrap();
//! assert_eq!(json["widgets"].as_array().unwrap().len(), 4);
//! ```

use run_state::Step;
use serde_json::{Value, json};

/// The stages charted one series each.
pub const STAGES: &[Step] = &[Step::Validate, Step::Build, Step::Test, Step::Deploy, Step::E2e, Step::ProdDeploy];

const DAY: u32 = 86_400;

fn widget(title: &str, region: &str, y: u32, x: u32, metrics: Vec<Value>, stat: &str, extra: Value) -> Value {
    let mut properties = json!({
        "title": title,
        "region": region,
        "view": "timeSeries",
        "stat": stat,
        "period": DAY,
        "metrics": metrics,
    });
    if let (Some(properties), Value::Object(extra)) = (properties.as_object_mut(), extra) {
        properties.extend(extra);
    }
    json!({"type": "metric", "x": x, "y": y, "width": 12, "height": 6, "properties": properties})
}

/// The dashboard's body (pure): four widgets over `namespace` in `region`.
pub fn body(namespace: &str, region: &str) -> String {
    let outcome = |step: Step, outcome: &str, id: &str| json!([namespace, "StageOutcome", "Step", step.as_str(), "Outcome", outcome, {"id": id, "visible": false}]);
    // Every run records its diff once: its outcomes per day are the runs per day.
    let runs = vec![
        outcome(Step::Diff, "passed", "passed"),
        outcome(Step::Diff, "failed", "failed"),
        json!([{"expression": "FILL(passed, 0) + FILL(failed, 0)", "label": "runs", "id": "runs"}]),
    ];
    let mut rates = Vec::new();
    for (i, step) in STAGES.iter().enumerate() {
        let (p, f) = (format!("p{i}"), format!("f{i}"));
        rates.push(outcome(*step, "passed", &p));
        rates.push(outcome(*step, "failed", &f));
        rates.push(json!([{
            "expression": format!("100 * FILL({p}, 0) / (FILL({p}, 0) + FILL({f}, 0))"),
            "label": step.as_str(),
            "id": format!("rate{i}"),
        }]));
    }
    let durations = STAGES.iter().map(|step| json!([namespace, "StageDuration", "Step", step.as_str()])).collect();
    let coverage = vec![json!([{
        "expression": format!(
            "SEARCH('{{{namespace},Component}} MetricName=\"LineCoverage\"', 'Average', {DAY})"
        ),
        "id": "coverage",
    }])];
    let percent = json!({"yAxis": {"left": {"min": 0, "max": 100}}});
    let widgets = vec![
        widget("Runs per day", region, 0, 0, runs, "Sum", json!({})),
        widget("Success rate per stage (%)", region, 0, 12, rates, "Sum", percent.clone()),
        widget("Stage duration P95 (s)", region, 6, 0, durations, "p95", json!({})),
        widget("Line coverage per component (%)", region, 6, 12, coverage, "Average", percent),
    ];
    json!({"widgets": widgets}).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::{Duration, SystemTime};

    use run_state::{Coverage, PIPELINE, Ratio, Status, StepRecord};

    use super::*;

    #[test]
    fn every_chart_reads_a_metric_and_dimensions_that_status_report_metrics_puts() {
        let json: Value = serde_json::from_str(&body("Pipeline/Test", "eu-west-1")).unwrap();
        let widgets = json["widgets"].as_array().unwrap();
        let titles: Vec<&str> = widgets.iter().map(|w| w["properties"]["title"].as_str().unwrap()).collect();
        assert_eq!(
            titles,
            ["Runs per day", "Success rate per stage (%)", "Stage duration P95 (s)", "Line coverage per component (%)"]
        );
        assert!(widgets.iter().all(|w| w["properties"]["region"] == "eu-west-1"));
        assert_eq!(widgets[2]["properties"]["stat"], "p95");

        // What one run's metrics carry: (name, dimension names).
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let step = |component: &str, step, status| {
            let mut record = StepRecord::new("r1", "abc", component, step, status);
            record.started_at = Some(at);
            record.ended_at = Some(at + Duration::from_secs(5));
            record
        };
        let mut test = step("api", Step::Test, Status::Passed);
        test.details.coverage =
            Some(Box::new(Coverage { lines: Ratio { covered: 1, total: 2 }, ..Coverage::default() }));
        let put: BTreeSet<(String, Vec<String>)> = crate::notify::metrics(&[
            step(PIPELINE, Step::Diff, Status::Passed),
            test,
            step("api", Step::Deploy, Status::Failed),
        ])
        .into_iter()
        .map(|m| (m.name.to_string(), m.dimensions.iter().map(|(k, _)| k.to_string()).collect()))
        .collect();
        // Every metric a chart names is one of those, in the namespace given.
        let mut charted = 0;
        for widget in widgets {
            for metric in widget["properties"]["metrics"].as_array().unwrap() {
                let parts = metric.as_array().unwrap();
                let Some(namespace) = parts[0].as_str() else {
                    let expression = parts[0]["expression"].as_str().unwrap();
                    if expression.starts_with("SEARCH(") {
                        assert!(expression.contains("{Pipeline/Test,Component} MetricName=\"LineCoverage\""));
                        assert!(put.contains(&("LineCoverage".to_string(), vec!["Component".to_string()])));
                    }
                    continue;
                };
                assert_eq!(namespace, "Pipeline/Test");
                let name = parts[1].as_str().unwrap().to_string();
                let dimensions: Vec<String> =
                    parts[2..].iter().filter_map(|p| p.as_str()).step_by(2).map(str::to_string).collect();
                assert!(put.contains(&(name.clone(), dimensions.clone())), "{name} {dimensions:?} is never put");
                charted += 1;
            }
        }
        // Runs: 2; rates: 2 per stage; durations: 1 per stage.
        assert_eq!(charted, 2 + 3 * STAGES.len());
    }
}
