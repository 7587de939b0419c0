//! Findings as text, JSON, JUnit XML and SARIF.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::json;

use crate::{Finding, Severity, rules};

/// `path:line:col: ID severity: message`, one per line.
pub fn human(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let severity = severity_name(f.severity);
        let _ = writeln!(out, "{}:{}:{}: {} {severity}: {}", f.path, f.pos.line, f.pos.column, f.rule, f.message);
    }
    out
}

/// `{"findings": [...], "counts": {"error": n, ...}}`.
pub fn json(findings: &[Finding]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::from([("error", 0), ("warning", 0), ("info", 0)]);
    for f in findings {
        *counts.entry(severity_name(f.severity)).or_default() += 1;
    }
    serde_json::to_string_pretty(&json!({ "findings": findings, "counts": counts })).expect("findings serialise")
}

/// A severity's name in reports and config (`error`, `warning`, `info`).
pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// JUnit XML: one case per checked file, failed when it has a finding at or above `fail_on`
/// (findings below it are listed in the case's output, which CodeBuild shows as passed).
pub fn junit(files: &[String], findings: &[Finding], fail_on: Severity) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("validate");
    let mut suite = TestSuite::new("validate");
    let mut by_file: BTreeMap<&str, Vec<&Finding>> = files.iter().map(|f| (f.as_str(), Vec::new())).collect();
    for f in findings {
        by_file.entry(f.path.as_str()).or_default().push(f);
    }
    for (file, found) in by_file {
        let owned: Vec<Finding> = found.iter().map(|f| (*f).clone()).collect();
        let failing = owned.iter().filter(|f| f.severity >= fail_on).count();
        let status = if failing == 0 {
            TestCaseStatus::success()
        } else {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(format!("{failing} finding(s) at or above {}", severity_name(fail_on)));
            status.set_description(human(&owned));
            status
        };
        let name = if file.is_empty() { "tools" } else { file };
        let mut case = TestCase::new(name, status);
        if failing == 0 && !owned.is_empty() {
            case.set_system_out(human(&owned));
        }
        case.set_classname("validate");
        suite.add_test_case(case);
    }
    report.add_test_suite(suite);
    report.to_string().expect("a JUnit report serialises")
}

/// A finding's SARIF rule: its ID, or, for a native rule that shares its ID with others,
/// the hierarchical `ID/name` (`E1001/unknown-section`), with the rule's own summary.
fn sarif_rule(finding: &Finding) -> (String, &str) {
    match rules::Rule::of(finding) {
        Some(rule) if rule.shares_id() => (format!("{}/{}", rule.id, rule.name), rule.summary),
        Some(rule) => (rule.id.to_string(), rule.summary),
        None => {
            let summary = rules::ALL.iter().find(|r| r.id == finding.rule && !r.shares_id()).map(|r| r.summary);
            (finding.rule.clone(), summary.unwrap_or(finding.rule.as_str()))
        }
    }
}

/// SARIF 2.1.0, for code-scanning tools: one rule entry per native rule (rules that share a
/// cfn-lint ID each have their own, `E1001/unknown-section`), each result pointing at its rule.
pub fn sarif(findings: &[Finding]) -> String {
    let mut entries: BTreeMap<String, &str> = BTreeMap::new();
    for f in findings {
        let (id, summary) = sarif_rule(f);
        entries.entry(id).or_insert(summary);
    }
    let index: BTreeMap<&str, usize> = entries.keys().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let rules: Vec<_> =
        entries.iter().map(|(id, summary)| json!({ "id": id, "shortDescription": { "text": summary } })).collect();
    let results: Vec<_> = findings
        .iter()
        .map(|f| {
            let (id, _) = sarif_rule(f);
            json!({
                "ruleId": id,
                "ruleIndex": index[id.as_str()],
                "level": match f.severity { Severity::Error => "error", Severity::Warning => "warning", Severity::Info => "note" },
                "message": { "text": f.message },
                "locations": [{ "physicalLocation": {
                    "artifactLocation": { "uri": f.path },
                    "region": { "startLine": f.pos.line, "startColumn": f.pos.column }
                }}]
            })
        })
        .collect();
    let doc = json!({
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [{
            "tool": { "driver": { "name": "validate", "rules": rules } },
            "results": results
        }]
    });
    serde_json::to_string_pretty(&doc).expect("SARIF serialises")
}
