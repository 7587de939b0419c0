//! One self-contained HTML page (no network, no script; inline SVG and CSS): a run as a
//! timeline of its steps per component, the gate's decision with its reasons, each promotion's
//! decision ([`crate::DeployDecision`]) with its reasons, and the trends of [`crate::stats`] as
//! small charts.
//!
//! Pure: [`render`] takes the run's report and the figures and returns the page. Every text
//! taken from records is escaped ([`escape`]), so a step's error is shown, never run.
//!
//! ```
//! use run_state::{Status, Step, StepRecord};
//! use status_report::stats::{Collector, Query, StatsPolicy};
//! use status_report::{GatePolicy, RunReport, decide, page};
//!
//! let mut failed = StepRecord::new("r1", "abc", "api", Step::Test, Status::Failed);
//! failed.details.error = Some("<script>alert(1)</script>".into());
//! let records = vec![failed];
//! let gate = decide(&records, None, &GatePolicy::default());
//! let stats = Collector::new(Query::default(), StatsPolicy::default()).finish();
//! let html = page::render(&RunReport::new("r1", records, gate), &[], &stats);
//! assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
//! assert!(!html.contains("<script>"));
//! ```

use std::fmt::Write;
use std::time::SystemTime;

use run_state::{Status, percent_text};

use crate::stats::Stats;
use crate::{DeployDecision, RunReport, format_duration};

/// The file name [`render`]'s page is written under in `--out DIR`.
pub const FILE_NAME: &str = "pipeline.html";

/// Text made safe inside HTML elements and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}\
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #ddd;vertical-align:top}\
.passed{color:#17702a}.failed,.cancelled{color:#b00020;font-weight:bold}.skipped{color:#777}.running,.pending{color:#a26b00}\
.bar-passed{fill:#3a9d4f}.bar-failed,.bar-cancelled{fill:#d0343f}.bar-skipped{fill:#bbb}.bar-running,.bar-pending{fill:#e0a000}\
.refused{color:#b00020}.allowed{color:#17702a}pre{white-space:pre-wrap;margin:0;max-width:70em}\
.chart{display:inline-block;margin:0 1.5em 1em 0;vertical-align:top}.chart svg{border:1px solid #ddd;background:#fafafa}\
.point{fill:#2b5fad}.bar{fill:#7aa3d9}";

/// The page of a run, its promotions' decisions and the trends (pure).
pub fn render(report: &RunReport, promotions: &[DeployDecision], stats: &Stats) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
         <title>Pipeline run {id}</title><style>{STYLE}</style></head><body>\n\
         <h1>Pipeline run {id} <small>({commit})</small></h1>\n",
        id = escape(&report.run_id),
        commit = escape(run_state::prefix(&report.commit, 12)),
    );
    gate(&mut out, report);
    for decision in promotions {
        promotion(&mut out, decision);
    }
    timeline(&mut out, report);
    trends(&mut out, stats);
    out.push_str("</body></html>\n");
    out
}

fn gate(out: &mut String, report: &RunReport) {
    let (class, verdict) = if report.gate.allowed { ("allowed", "passed") } else { ("refused", "refused") };
    let _ = writeln!(out, "<h2>Gate: <span class=\"{class}\" id=\"gate\">{verdict}</span></h2>");
    if !report.gate.reasons.is_empty() {
        out.push_str("<ul id=\"gate-reasons\">\n");
        for reason in &report.gate.reasons {
            let _ = writeln!(out, "<li>{}</li>", escape(reason));
        }
        out.push_str("</ul>\n");
    }
}

fn promotion(out: &mut String, decision: &DeployDecision) {
    let (class, verdict) = if decision.refused.is_empty() { ("allowed", "allowed") } else { ("refused", "refused") };
    let _ = writeln!(
        out,
        "<h2>Promotion to {env}: <span class=\"{class}\" id=\"promotion-{env}\">{verdict}</span></h2>",
        env = escape(&decision.environment)
    );
    let _ = writeln!(out, "<details><summary>why</summary><pre>{}</pre></details>", escape(&decision.describe()));
}

fn secs_since(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map_or(0.0, |d| d.as_secs_f64())
}

fn timeline(out: &mut String, report: &RunReport) {
    out.push_str("<h2>Steps</h2>\n");
    let start = report.steps.iter().filter_map(|s| s.started_at.or(s.ended_at)).min();
    let end = report.steps.iter().filter_map(|s| s.ended_at.or(s.started_at)).max();
    let span = match (start, end) {
        (Some(start), Some(end)) => secs_since(start, end).max(1.0),
        _ => 1.0,
    };
    const WIDTH: f64 = 400.0;
    out.push_str(
        "<table id=\"steps\"><tr><th>component</th><th>step</th><th>status</th><th>start</th><th>duration</th>\
         <th>timeline</th><th>details</th></tr>\n",
    );
    for step in &report.steps {
        let status = step.status.as_str();
        let offset = match (start, step.started_at) {
            (Some(start), Some(at)) => secs_since(start, at),
            _ => 0.0,
        };
        let duration = step.duration();
        let bar = match (start, step.started_at.or(step.ended_at)) {
            (Some(_), Some(_)) => {
                let x = offset / span * WIDTH;
                let w = (duration.map_or(0.0, |d| d.as_secs_f64()) / span * WIDTH).max(2.0);
                format!(
                    "<svg width=\"{WIDTH}\" height=\"12\" role=\"img\"><rect class=\"bar-{status}\" x=\"{x:.1}\" y=\"1\" width=\"{w:.1}\" height=\"10\"/></svg>"
                )
            }
            _ => String::new(),
        };
        let started = step.started_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()).unwrap_or_default();
        let mut details = String::new();
        if let Some(error) = &step.details.error {
            let _ = write!(
                details,
                "<details class=\"error\"><summary>error</summary><pre>{}</pre></details>",
                escape(error)
            );
        }
        if let Some(tail) = &step.details.log_tail {
            let _ = write!(details, "<details><summary>log</summary><pre>{}</pre></details>", escape(tail));
        }
        if let Some(note) = &step.details.note {
            let _ = write!(details, "{}", escape(note));
        }
        if let Some(coverage) = &step.details.coverage {
            let _ = write!(details, " <span>{}</span>", escape(&coverage.summary()));
        }
        let row_class =
            if matches!(step.status, Status::Failed | Status::Cancelled) { " class=\"failed-step\"" } else { "" };
        let _ = writeln!(
            out,
            "<tr{row_class}><td>{}</td><td>{}</td><td class=\"{status}\">{status}</td><td>{started}</td><td>{}</td><td>{bar}</td><td>{details}</td></tr>",
            escape(&step.component),
            step.step,
            duration.map(format_duration).unwrap_or_default(),
        );
    }
    out.push_str("</table>\n");
}

/// A small chart of `values` (one point or bar per value), labelled by `labels`.
fn chart(out: &mut String, id: &str, title: &str, labels: &[String], values: &[f64], bars: bool, max: Option<f64>) {
    const W: f64 = 320.0;
    const H: f64 = 120.0;
    let top = max.unwrap_or_else(|| values.iter().copied().fold(0.0, f64::max)).max(1e-9);
    let step = W / values.len().max(1) as f64;
    let _ = write!(
        out,
        "<div class=\"chart\" id=\"{id}\"><div>{}</div><svg width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        escape(title),
        escape(title)
    );
    let mut line = Vec::new();
    for (i, (value, label)) in values.iter().zip(labels).enumerate() {
        let x = step * i as f64 + step / 2.0;
        let y = H - 5.0 - value / top * (H - 10.0);
        let tip = format!("{}: {}", escape(label), percent_or_count(*value, max.is_some()));
        if bars {
            let _ = write!(
                out,
                "<rect class=\"bar\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{tip}</title></rect>",
                x - step * 0.4,
                (step * 0.8).max(1.0),
                H - 5.0 - y
            );
        } else {
            line.push(format!("{x:.1},{y:.1}"));
            let _ = write!(
                out,
                "<circle class=\"point\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\"><title>{tip}</title></circle>"
            );
        }
    }
    if line.len() > 1 {
        let _ = write!(out, "<polyline fill=\"none\" stroke=\"#2b5fad\" points=\"{}\"/>", line.join(" "));
    }
    out.push_str("</svg></div>\n");
}

fn percent_or_count(value: f64, percent: bool) -> String {
    if percent { format!("{}%", percent_text(value)) } else { format!("{value}") }
}

fn trends(out: &mut String, stats: &Stats) {
    let _ = writeln!(
        out,
        "<h2>Trends</h2>\n<p id=\"summary\">{} run(s): {} passed, {} failed, {} unfinished; success rate {}</p>",
        stats.runs.total,
        stats.runs.passed,
        stats.runs.failed,
        stats.runs.unfinished,
        stats.runs.success_rate.map_or_else(|| "n/a".into(), |p| format!("{}%", percent_text(p)))
    );
    let days: Vec<String> = stats.per_day.iter().map(|p| p.start.clone()).collect();
    let runs: Vec<f64> = stats.per_day.iter().map(|p| p.counts.total as f64).collect();
    chart(out, "chart-runs", "Runs per day", &days, &runs, true, None);
    let (rate_days, rates): (Vec<String>, Vec<f64>) =
        stats.per_day.iter().filter_map(|p| Some((p.start.clone(), p.counts.success_rate?))).unzip();
    chart(out, "chart-success", "Success rate per day", &rate_days, &rates, false, Some(100.0));
    for trend in &stats.coverage {
        let (days, lines): (Vec<String>, Vec<f64>) =
            trend.points.iter().filter_map(|p| Some((p.day.clone(), p.lines?))).unzip();
        let id = format!("chart-coverage-{}", escape(&trend.component));
        chart(out, &id, &format!("Line coverage of {}", trend.component), &days, &lines, false, Some(100.0));
    }
    out.push_str("<h2>Stages</h2>\n<table id=\"stages\"><tr><th>stage</th><th>passed</th><th>failed</th><th>success</th><th>avg</th><th>p95</th></tr>\n");
    let secs = |v: Option<f64>| {
        v.map_or_else(|| "n/a".into(), |s| format_duration(std::time::Duration::from_secs_f64(s.max(0.0))))
    };
    for stage in &stats.stages {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            stage.step,
            stage.passed,
            stage.failed,
            stage.success_rate.map_or_else(|| "n/a".into(), |p| format!("{}%", percent_text(p))),
            secs(stage.duration.average_secs),
            secs(stage.duration.p95_secs)
        );
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use run_state::{Coverage, Ratio, Step, StepRecord};

    use super::*;
    use crate::stats::{Collector, Query, StatsPolicy};
    use crate::{GatePolicy, decide};

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn the_failed_step_is_marked_its_error_escaped_and_the_charts_have_a_point_per_day() {
        let mut collector = Collector::new(Query::default(), StatsPolicy::default());
        let mut last = Vec::new();
        for day in 0..3u64 {
            let id = format!("r{day}");
            let mut test = StepRecord::new(&id, "abc", "api", Step::Test, Status::Passed);
            test.started_at = Some(at(day * 86_400));
            test.ended_at = Some(at(day * 86_400 + 60));
            test.details.coverage =
                Some(Box::new(Coverage { lines: Ratio { covered: 80 + day, total: 100 }, ..Coverage::default() }));
            let mut web = StepRecord::new(&id, "abc", "web", Step::Test, Status::Passed);
            web.started_at = Some(at(day * 86_400 + 10));
            web.ended_at = Some(at(day * 86_400 + 20));
            if day == 2 {
                web.status = Status::Failed;
                web.details.error = Some("expected <b>1</b> & got \"2\" <script>alert('x')</script>".into());
            }
            let records = vec![test, web];
            collector.add(&id, &records);
            last = records;
        }
        let stats = collector.finish();
        let gate = decide(&last, None, &GatePolicy::default());
        let promotion = DeployDecision {
            environment: "prod".into(),
            step: Step::ProdDeploy,
            refused: vec!["web test <failed>".into()],
            components: Default::default(),
            notes: vec![],
        };
        let html = render(&RunReport::new("r2", last, gate), &[promotion], &stats);
        assert!(html.contains("<span class=\"refused\" id=\"promotion-prod\">refused</span>"));
        assert!(html.contains("refused: web test &lt;failed&gt;"));
        assert!(!html.contains("<script"), "a record's text reached the page as markup");
        assert!(html.contains(
            "<details class=\"error\"><summary>error</summary><pre>expected &lt;b&gt;1&lt;/b&gt; &amp; got &quot;2&quot; &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</pre></details>"
        ));
        assert!(html.contains("<tr class=\"failed-step\"><td>web</td><td>test</td><td class=\"failed\">failed</td>"));
        assert!(html.contains("<span class=\"refused\" id=\"gate\">refused</span>"));
        let chart = |id: &str| {
            let start = html.find(&format!("id=\"{id}\"")).unwrap();
            let end = start + html[start..].find("</svg>").unwrap();
            html[start..end].to_string()
        };
        assert_eq!(chart("chart-runs").matches("<rect class=\"bar\"").count(), 3);
        assert_eq!(chart("chart-success").matches("<circle").count(), 3);
        assert_eq!(chart("chart-coverage-api").matches("<circle").count(), 3);
        assert!(chart("chart-coverage-api").contains("<title>2023-11-16: 82%</title>"));
        // No request leaves the page.
        for external in ["http://", "https://", "src=", "<link", "@import", "url("] {
            assert!(!html.contains(external), "{external}");
        }
    }
}
