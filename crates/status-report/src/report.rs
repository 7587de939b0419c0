//! Reports of a run: terminal table, Markdown, JSON and JUnit XML.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use gate::GateDecision;
use run_state::{Coverage, Ratio, Status, StepRecord, percent_text};

/// Everything a report shows: the run, its steps and the gate's decision.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run.
    pub run_id: String,
    /// Its commit.
    pub commit: String,
    /// The gate's decision.
    pub gate: GateDecision,
    /// Every step, in pipeline order.
    pub steps: Vec<StepRecord>,
}

/// GitHub refuses step summaries over 1 MiB; stay well under it.
pub const MARKDOWN_LIMIT: usize = 1024 * 1024 - 16 * 1024;

const LOGS_LEFT_OUT: &str =
    "\n_Logs left out: the summary would pass GitHub's 1 MiB limit. See the run's logs folder._\n";

impl RunReport {
    /// Builds a report from a run's records.
    pub fn new(run_id: &str, steps: Vec<StepRecord>, gate: GateDecision) -> RunReport {
        let commit = steps.first().map(|s| s.commit.clone()).unwrap_or_default();
        RunReport { run_id: run_id.into(), commit, gate, steps }
    }

    /// A table for a terminal, followed by the gate's decision: on a terminal it fits the
    /// terminal's width (long cells wrap; `report.md` keeps the full text).
    #[cfg(feature = "cli")]
    pub fn to_table(&self) -> String {
        self.table(None)
    }

    /// The table fitted to `width` columns, long cells wrapped.
    #[cfg(feature = "cli")]
    pub fn to_table_width(&self, width: u16) -> String {
        self.table(Some(width))
    }

    /// One line per step (`component step: status (time) details`), then the gate's decision:
    /// for logs and anything that is not a terminal.
    pub fn to_lines(&self) -> String {
        let mut out = format!("run {} at {}\n", self.run_id, short(&self.commit));
        for step in &self.steps {
            let _ = write!(out, "{} {}: {}", step.component, step.step, step.status);
            if let Some(duration) = step.duration() {
                let _ = write!(out, " ({})", format_duration(duration));
            }
            let detail = one_line_detail(step, true);
            if !detail.is_empty() {
                let _ = write!(out, ": {detail}");
            }
            out.push('\n');
        }
        out.push_str(&self.gate_line());
        out
    }

    #[cfg(feature = "cli")]
    fn table(&self, width: Option<u16>) -> String {
        let mut table = comfy_table::Table::new();
        table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
        // Fitted to the terminal (or `width`): long cells wrap instead of pushing the table wide.
        table.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
        if let Some(width) = width {
            table.set_width(width);
        }
        let with_coverage = self.steps.iter().any(|s| s.details.coverage.is_some());
        let mut header = vec!["component", "step", "status", "time"];
        if with_coverage {
            header.push("coverage");
        }
        header.push("details");
        table.set_header(header);
        for step in &self.steps {
            let mut row = vec![
                step.component.clone(),
                step.step.to_string(),
                step.status.to_string(),
                step.duration().map(format_duration).unwrap_or_default(),
            ];
            if with_coverage {
                row.push(step.details.coverage.as_ref().map(|c| c.summary()).unwrap_or_default());
            }
            row.push(one_line_detail(step, !with_coverage));
            table.add_row(row);
        }
        let mut out = format!("run {} at {}\n{table}\n", self.run_id, short(&self.commit));
        out.push_str(&self.gate_line());
        out
    }

    fn gate_line(&self) -> String {
        if self.gate.allowed {
            "gate: passed\n".to_string()
        } else {
            let mut out = String::from("gate: refused\n");
            for reason in &self.gate.reasons {
                let _ = writeln!(out, "  - {reason}");
            }
            out
        }
    }

    /// Markdown for `$GITHUB_STEP_SUMMARY` or a pull request comment, under [`MARKDOWN_LIMIT`].
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let verdict = if self.gate.allowed { "✅ gate passed" } else { "❌ gate refused" };
        let _ = writeln!(out, "## Pipeline run `{}` at `{}`: {verdict}\n", self.run_id, short(&self.commit));
        for reason in &self.gate.reasons {
            let _ = writeln!(out, "- {}", escape_md(reason));
        }
        if !self.gate.reasons.is_empty() {
            out.push('\n');
        }
        out.push_str("| component | step | status | time | details |\n|---|---|---|---|---|\n");
        for step in &self.steps {
            let _ = writeln!(
                out,
                "| {} | {} | {} {} | {} | {} |",
                escape_md(&step.component),
                step.step,
                status_icon(step.status),
                step.status,
                step.duration().map(format_duration).unwrap_or_default(),
                escape_md(&one_line_detail(step, true)),
            );
        }
        out.push_str(&self.coverage_markdown());
        let mut logs = String::new();
        for step in self.steps.iter().filter(|s| s.status == Status::Failed) {
            if let Some(tail) = &step.details.log_tail {
                let fence = "`".repeat(longest_backtick_run(tail).max(2) + 1);
                let _ = write!(
                    logs,
                    "\n<details><summary>{} {}: end of log</summary>\n\n{fence}\n{}\n{fence}\n</details>\n",
                    escape_md(&step.component),
                    step.step,
                    tail.trim_end()
                );
            }
        }
        if out.len() + logs.len() <= MARKDOWN_LIMIT {
            out.push_str(&logs);
        } else if out.len() + LOGS_LEFT_OUT.len() <= MARKDOWN_LIMIT {
            out.push_str(LOGS_LEFT_OUT);
        } else {
            let mut cut = MARKDOWN_LIMIT - 200;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str("\n\n_Table cut: the summary would pass GitHub's 1 MiB limit. See report.json._\n");
        }
        out
    }

    /// The coverage table (one row per component with figures) and, for each component, the
    /// files furthest below its minimum; empty when no step has coverage.
    fn coverage_markdown(&self) -> String {
        let steps: Vec<(&StepRecord, &Coverage)> =
            self.steps.iter().filter_map(|s| s.details.coverage.as_deref().map(|c| (s, c))).collect();
        if steps.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "\n### Coverage\n\n| component | lines | branches | changed lines | report |\n|---|---|---|---|---|\n",
        );
        let cell = |ratio: Option<Ratio>, min: Option<f64>| match ratio {
            None => "—".to_string(),
            Some(ratio) => {
                let mut text = ratio.describe();
                if let Some(min) = min {
                    let mark = if ratio.reaches(min) { "≥" } else { "❌ <" };
                    text.push_str(&format!(" {mark} {}%", percent_text(min)));
                }
                text
            }
        };
        for (step, coverage) in &steps {
            let _ = writeln!(
                out,
                "| {} {} | {} | {} | {} | `{}` |",
                status_icon(step.status),
                escape_md(&step.component),
                cell(Some(coverage.lines), coverage.min_lines),
                cell(coverage.branches, coverage.min_branches),
                cell(coverage.changed_lines, coverage.min_changed_lines),
                escape_md(&coverage.report).replace('`', "'"),
            );
        }
        for (step, coverage) in &steps {
            let below: Vec<_> = coverage.files_below().collect();
            if below.is_empty() {
                continue;
            }
            let min = coverage.min_lines.map_or_else(|| "100%".to_string(), |m| format!("{}%", percent_text(m)));
            let open = if step.status == Status::Failed { " open" } else { "" };
            let _ = write!(
                out,
                "\n<details{open}><summary>{}: files below {min} of lines, furthest first</summary>\n\n| file | lines |\n|---|---|\n",
                escape_md(&step.component)
            );
            for file in below {
                let figure = if file.reported { file.lines.describe() } else { "0% (in no report)".to_string() };
                let _ = writeln!(out, "| `{}` | {figure} |", escape_md(&file.path).replace('`', "'"));
            }
            if coverage.unreported > 0 {
                let _ = writeln!(out, "\n{} source file(s) in no coverage report count as 0%.", coverage.unreported);
            }
            out.push_str("</details>\n");
        }
        out
    }

    /// The report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// JUnit XML: one suite per component, one case per step, for CodeBuild report groups.
    pub fn to_junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

        let mut report = Report::new(format!("pipeline {}", self.run_id));
        let mut components: Vec<&str> = self.steps.iter().map(|s| s.component.as_str()).collect();
        components.sort_unstable();
        components.dedup();
        for component in components {
            let mut suite = TestSuite::new(component);
            for step in self.steps.iter().filter(|s| s.component == component) {
                let status = match step.status {
                    Status::Passed => TestCaseStatus::success(),
                    Status::Skipped => {
                        let mut status = TestCaseStatus::skipped();
                        if let Some(note) = &step.details.note {
                            status.set_message(note.as_str());
                        }
                        status
                    }
                    Status::Failed | Status::Cancelled | Status::Running | Status::Pending => {
                        let kind =
                            if step.status == Status::Failed { NonSuccessKind::Failure } else { NonSuccessKind::Error };
                        let mut status = TestCaseStatus::non_success(kind);
                        status.set_message(step.details.error.clone().unwrap_or_else(|| step.status.to_string()));
                        if let Some(tail) = &step.details.log_tail {
                            status.set_description(tail.as_str());
                        }
                        status
                    }
                };
                let mut case = TestCase::new(step.step.as_str(), status);
                case.set_classname(component);
                if let Some(coverage) = &step.details.coverage {
                    case.add_properties(coverage_properties(coverage));
                }
                if let Some(duration) = step.duration() {
                    case.set_time(duration);
                }
                suite.add_test_case(case);
            }
            report.add_test_suite(suite);
        }
        report.to_string().expect("a JUnit report always serialises")
    }
}

/// The coverage figures as JUnit properties: `coverage.lines` (percent), `coverage.lines.covered`,
/// `coverage.lines.total`, the same for `branches` and `changed_lines`, and each `….min`.
fn coverage_properties(coverage: &Coverage) -> Vec<quick_junit::Property> {
    let mut properties = vec![quick_junit::Property::new("coverage.report", coverage.report.as_str())];
    for (name, ratio, min) in [
        ("lines", Some(coverage.lines), coverage.min_lines),
        ("branches", coverage.branches, coverage.min_branches),
        ("changed_lines", coverage.changed_lines, coverage.min_changed_lines),
    ] {
        if let Some(ratio) = ratio {
            if let Some(percent) = ratio.percent() {
                properties.push(quick_junit::Property::new(format!("coverage.{name}"), format!("{percent:.2}")));
            }
            properties.push(quick_junit::Property::new(format!("coverage.{name}.covered"), ratio.covered.to_string()));
            properties.push(quick_junit::Property::new(format!("coverage.{name}.total"), ratio.total.to_string()));
        }
        if let Some(min) = min {
            properties.push(quick_junit::Property::new(format!("coverage.{name}.min"), percent_text(min)));
        }
    }
    properties
}

/// The error, else the note, else (with `coverage`) the coverage figures.
fn one_line_detail(step: &StepRecord, coverage: bool) -> String {
    let coverage = step.details.coverage.as_ref().filter(|_| coverage).map(|c| format!("coverage: {}", c.summary()));
    let text = step.details.error.as_deref().or(step.details.note.as_deref()).or(coverage.as_deref()).unwrap_or("");
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > 120 {
        format!("{}…", line.chars().take(119).collect::<String>())
    } else {
        line.to_string()
    }
}

fn status_icon(status: Status) -> &'static str {
    match status {
        Status::Passed => "✅",
        Status::Failed => "❌",
        Status::Skipped => "⏭️",
        Status::Cancelled => "🚫",
        Status::Running | Status::Pending => "⏳",
    }
}

fn escape_md(text: &str) -> String {
    text.replace('|', "\\|").replace('<', "&lt;").replace('\n', " ")
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

fn short(commit: &str) -> &str {
    run_state::prefix(commit, 12)
}

/// `1.2s`, `3m04s`.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", duration.as_secs() / 60, duration.as_secs() % 60)
    }
}
