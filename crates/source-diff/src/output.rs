//! The `env` and `github` renderings of a report (JSON is its `Serialize`).

use std::fmt::Write;

use crate::DiffReport;

/// `NAME_tests_required=true` lines, one per flag, then `any_changed`, for CodeBuild exported
/// variables or `source`.
pub fn render_env(report: &DiffReport) -> String {
    let mut out = String::new();
    for (flag, value) in &report.flags {
        let _ = writeln!(out, "{flag}={value}");
    }
    let _ = writeln!(out, "any_changed={}", report.changed().next().is_some());
    out
}

/// Lines for `$GITHUB_OUTPUT`: every flag, `any_changed`, and `changed_components` as a JSON
/// array for a build matrix.
pub fn render_github(report: &DiffReport) -> String {
    let mut out = render_env(report);
    let changed: Vec<&str> = report.changed().collect();
    let _ = writeln!(out, "changed_components={}", serde_json::to_string(&changed).unwrap_or_else(|_| "[]".into()));
    out
}
