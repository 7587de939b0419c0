//! Reports of a run: Markdown, JSON and JUnit XML, as their readers see them.

use std::time::{Duration, SystemTime};

use run_state::{Status, Step, StepRecord};
use status_report::{GateDecision, GatePolicy, MARKDOWN_LIMIT, Requirements, RunReport, decide};

fn rec(component: &str, step: Step, status: Status) -> StepRecord {
    let mut record = StepRecord::new("r1", "0123456789abcdef0123", component, step, status);
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    record.started_at = Some(start);
    record.ended_at = status.is_final().then_some(start + Duration::from_millis(1500));
    record
}

/// The gate of a run whose diff required nothing, with tests required: these tests are about rendering.
fn gate(records: &[StepRecord]) -> GateDecision {
    let policy = GatePolicy { required_steps: vec![Step::Test], allow_skipped: true, ..Default::default() };
    decide(records, Some(&Requirements::default()), &policy)
}

/// A small run: one failed build, one skipped test, one passed pipeline step.
fn sample() -> RunReport {
    let mut failed = rec("api", Step::Build, Status::Failed);
    failed.details.error = Some("cargo build exited with 101".into());
    failed.details.log_tail = Some("Compiling api\nerror[E0308]: mismatched types\n".into());
    let mut skipped = rec("web", Step::Test, Status::Skipped);
    skipped.details.note = Some("web did not change".into());
    let records = vec![
        rec(run_state::PIPELINE, Step::Diff, Status::Passed),
        failed,
        rec("api", Step::Test, Status::Passed),
        skipped,
    ];
    let gate = gate(&records);
    RunReport::new("r1", records, gate)
}

#[test]
fn markdown_has_a_row_per_step_the_gate_reasons_and_the_failed_log() {
    let markdown = sample().to_markdown();
    assert!(markdown.starts_with("## Pipeline run `r1` at `0123456789ab`: ❌ gate refused\n"), "{markdown}");
    assert!(markdown.contains("\n- api build failed: cargo build exited with 101\n"), "{markdown}");
    for row in [
        "| pipeline | diff | ✅ passed | 1.5s |  |",
        "| api | build | ❌ failed | 1.5s | cargo build exited with 101 |",
        "| api | test | ✅ passed | 1.5s |  |",
        "| web | test | ⏭️ skipped | 1.5s | web did not change |",
    ] {
        assert!(markdown.contains(row), "missing row {row} in\n{markdown}");
    }
    assert!(markdown.contains("<summary>api build: end of log</summary>"), "{markdown}");
    assert!(markdown.contains("error[E0308]: mismatched types"), "{markdown}");
}

#[test]
fn markdown_of_a_passed_run_says_so_and_lists_no_reasons() {
    let records = vec![rec("api", Step::Test, Status::Passed)];
    let report = RunReport::new("r1", records.clone(), gate(&records));
    let markdown = report.to_markdown();
    assert!(markdown.contains("✅ gate passed"), "{markdown}");
    assert!(!markdown.contains("\n- "), "{markdown}");
}

#[test]
fn markdown_stays_under_the_limit_with_a_huge_log_and_many_steps() {
    let mut records = Vec::new();
    for c in 0..500 {
        for &step in Step::ALL {
            records.push(rec(&format!("component-{c:03}"), step, Status::Passed));
        }
    }
    assert_eq!(records.len(), 500 * Step::ALL.len());
    let failed = records.iter_mut().find(|r| r.component == "component-042" && r.step == Step::Test).unwrap();
    failed.status = Status::Failed;
    failed.details.error = Some("2 tests failed".into());
    failed.details.log_tail = Some("a failing test log line\n".repeat(3 * 1024 * 1024 / 24));
    let report = RunReport::new("r1", records.clone(), gate(&records));

    let markdown = report.to_markdown();
    assert!(markdown.len() <= MARKDOWN_LIMIT, "{} bytes", markdown.len());
    // What a reader needs most survives: the verdict, the reason, every row.
    assert!(markdown.contains("- component-042 test failed: 2 tests failed"));
    assert!(markdown.contains("| component-042 | test | ❌ failed |"));
    assert!(markdown.contains("| component-499 | prod-deploy | ✅ passed |"));
    assert!(markdown.contains("_Logs left out"), "the reader is told where the log went");
}

#[test]
fn markdown_cuts_a_table_too_large_for_the_limit() {
    // Every step failed with a long message: the reasons and rows alone pass the limit.
    let mut records = Vec::new();
    for c in 0..500 {
        for &step in Step::ALL {
            let mut record = rec(&format!("component-{c:03}"), step, Status::Failed);
            record.details.error = Some(format!("{step} failed: {}", "é".repeat(200)));
            records.push(record);
        }
    }
    let report = RunReport::new("r1", records.clone(), gate(&records));
    let markdown = report.to_markdown();
    assert!(markdown.len() <= MARKDOWN_LIMIT, "{} bytes", markdown.len());
    assert!(markdown.starts_with("## Pipeline run `r1`"));
    assert!(markdown.trim_end().ends_with("See report.json._"), "the reader is told it was cut");
}

#[test]
fn json_has_the_run_the_gate_and_every_step() {
    let report = sample();
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["run_id"], "r1");
    assert_eq!(json["commit"], "0123456789abcdef0123");
    assert_eq!(json["gate"]["allowed"], false);
    assert_eq!(json["gate"]["reasons"], serde_json::json!(["api build failed: cargo build exited with 101"]));
    let steps = json["steps"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = steps
        .iter()
        .map(|s| (s["component"].as_str().unwrap(), s["step"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("pipeline", "diff", "passed"),
            ("api", "build", "failed"),
            ("api", "test", "passed"),
            ("web", "test", "skipped")
        ]
    );
    let build = &steps[1];
    assert_eq!(build["started_at"], "2027-01-15T08:00:00.000Z");
    assert_eq!(build["ended_at"], "2027-01-15T08:00:01.500Z");
    assert_eq!(build["details"]["error"], "cargo build exited with 101");
    assert_eq!(steps[3]["details"]["note"], "web did not change");
    // Each step parses back into a record, so other tools can read the report.
    let back: StepRecord = serde_json::from_value(build.clone()).unwrap();
    assert_eq!(back, report.steps[1]);
}

/// The XML of one `<testcase>`, up to the next case or the end of its suite.
fn testcase<'a>(xml: &'a str, component: &str, step: &str) -> &'a str {
    let open = format!(r#"<testcase name="{step}" classname="{component}""#);
    let start = xml.find(&open).unwrap_or_else(|| panic!("no testcase {component}/{step} in\n{xml}"));
    let rest = &xml[start + open.len()..];
    let end = [rest.find("<testcase "), rest.find("</testsuite>")].into_iter().flatten().min().unwrap();
    &rest[..end]
}

#[test]
fn junit_has_a_suite_per_component_and_a_case_per_step() {
    let xml = sample().to_junit();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert_eq!(xml.matches("<testsuite ").count(), 3, "{xml}");
    for suite in ["api", "pipeline", "web"] {
        assert!(xml.contains(&format!(r#"<testsuite name="{suite}""#)), "no suite {suite} in\n{xml}");
    }
    assert_eq!(xml.matches("<testcase ").count(), 4, "{xml}");
    assert_eq!(xml.matches("<failure").count(), 1, "{xml}");
    assert_eq!(xml.matches("<skipped").count(), 1, "{xml}");

    let build = testcase(&xml, "api", "build");
    assert!(build.contains(r#"<failure message="cargo build exited with 101""#), "{build}");
    assert!(build.contains("error[E0308]: mismatched types"), "the log tail is the failure's text: {build}");
    assert!(build.contains(r#"time="1.500""#), "{build}");
    let skipped = testcase(&xml, "web", "test");
    assert!(skipped.contains(r#"<skipped message="web did not change"/>"#), "{skipped}");
    let passed = testcase(&xml, "api", "test");
    assert!(!passed.contains("<failure") && !passed.contains("<skipped"), "{passed}");
}

#[test]
fn junit_reports_unfinished_steps_as_errors_and_escapes_text() {
    let mut failed = rec("api", Step::Test, Status::Failed);
    failed.details.error = Some(r#"expected <a> & "b""#.into());
    failed.details.log_tail = Some("\u{1b}[31mred\u{1b}[0m </failure> & more".into());
    let records = vec![failed, rec("web", Step::Deploy, Status::Running)];
    let report = RunReport::new("r1", records.clone(), gate(&records));
    let xml = report.to_junit();
    let web = testcase(&xml, "web", "deploy");
    assert!(web.contains(r#"<error message="running""#), "{web}");
    let api = testcase(&xml, "api", "test");
    assert!(api.contains("expected &lt;a&gt; &amp; &quot;b&quot;"), "{api}");
    assert_eq!(xml.matches("</failure>").count(), 1, "a log cannot close the element: {xml}");
    // ANSI colour codes are not valid XML 1.0 characters.
    assert!(!xml.contains('\u{1b}'), "{xml}");
}

#[test]
fn a_commit_or_run_id_of_any_text_renders() {
    // Commits come from the command line: a multi-byte character where the short form is cut must not panic.
    let commit = format!("a{}", "é".repeat(10));
    let records = vec![StepRecord::new("r1", &commit, "api", Step::Test, Status::Passed)];
    let report = RunReport::new("r1", records.clone(), gate(&records));
    assert!(report.to_markdown().contains("at `aéééééééééé`"));
    assert!(report.to_table().contains("at aéééééééééé"));
    let id = run_state::new_run_id(&commit, SystemTime::UNIX_EPOCH);
    // Run ids become folder names: only the commit's ASCII letters and digits are kept.
    assert!(id.ends_with("-a"), "{id}");
    assert!(run_state::check_name("run id", &id).is_ok(), "{id}");
}

/// A run where one component's coverage is below its minimum and another's passes.
fn coverage_run() -> RunReport {
    use run_state::{Coverage, FileCoverage, Ratio};
    let mut low = rec("api", Step::Test, Status::Failed);
    low.details.error = Some(
        "coverage below the minimum: lines 60% (6/10) < 80%; furthest below: lambda/api/new.py 0% (in no report); add tests or lower components.api.test.coverage.min_lines".into(),
    );
    low.details.coverage = Some(Box::new(Coverage {
        report: "coverage/api.xml".into(),
        lines: Ratio { covered: 6, total: 10 },
        branches: Some(Ratio { covered: 1, total: 4 }),
        changed_lines: None,
        min_lines: Some(80.0),
        min_branches: None,
        min_changed_lines: None,
        files: vec![
            FileCoverage { path: "lambda/api/new.py".into(), lines: Ratio { covered: 0, total: 3 }, reported: false },
            FileCoverage { path: "lambda/api/a|b.py".into(), lines: Ratio { covered: 2, total: 3 }, reported: true },
            FileCoverage { path: "lambda/api/index.py".into(), lines: Ratio { covered: 4, total: 4 }, reported: true },
        ],
        unreported: 1,
    }));
    let mut good = rec("web", Step::Test, Status::Passed);
    good.details.coverage = Some(Box::new(Coverage {
        report: "coverage/web.lcov".into(),
        lines: Ratio { covered: 9, total: 10 },
        min_lines: Some(70.0),
        changed_lines: Some(Ratio { covered: 0, total: 0 }),
        min_changed_lines: Some(90.0),
        ..Coverage::default()
    }));
    let records = vec![low, good];
    let gate = gate(&records);
    RunReport::new("r1", records, gate)
}

#[test]
fn coverage_figures_reach_every_report_and_the_gate_explains_the_refusal_in_one_line() {
    let report = coverage_run();
    assert_eq!(
        report.gate.reasons,
        [
            "api test failed: coverage below the minimum: lines 60% (6/10) < 80%; furthest below: lambda/api/new.py 0% (in no report); add tests or lower components.api.test.coverage.min_lines"
        ]
    );
    let md = report.to_markdown();
    assert!(md.contains("### Coverage"), "{md}");
    assert!(md.contains("| ❌ api | 60% (6/10) ❌ < 80% | 25% (1/4) | — | `coverage/api.xml` |"), "{md}");
    assert!(md.contains("| ✅ web | 90% (9/10) ≥ 70% | — | n/a (0/0) ≥ 90% | `coverage/web.lcov` |"), "{md}");
    // The files furthest below the minimum, lowest first; a file at or over it is not listed.
    assert!(md.contains("<details open><summary>api: files below 80% of lines, furthest first</summary>"), "{md}");
    let new = md.find("| `lambda/api/new.py` | 0% (in no report) |").expect(&md);
    let ab = md.find("| `lambda/api/a\\|b.py` | 66.6% (2/3) |").expect(&md);
    assert!(new < ab && !md.contains("lambda/api/index.py"), "{md}");

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["steps"][0]["details"]["coverage"]["lines"], serde_json::json!({"covered": 6, "total": 10}));
    assert_eq!(json["steps"][0]["details"]["coverage"]["min_lines"], 80.0);

    let junit = report.to_junit();
    for property in [
        r#"<property name="coverage.lines" value="60.00"/>"#,
        r#"<property name="coverage.lines.min" value="80"/>"#,
        r#"<property name="coverage.branches.covered" value="1"/>"#,
        r#"<property name="coverage.report" value="coverage/web.lcov"/>"#,
    ] {
        assert!(junit.contains(property), "{property} missing: {junit}");
    }
    #[cfg(feature = "cli")]
    {
        let table = report.to_table();
        assert!(table.contains("lines 90% (9/10) ≥ 70%"), "{table}");
        assert!(table.contains("coverage: lines") || table.contains("coverage below the minimum"), "{table}");
    }
}

/// The run's table in an 80-column terminal: a long error and coverage figures wrap instead of
/// pushing the table to 200 columns; off a terminal, one line per step.
#[test]
fn the_table_fits_a_narrow_terminal_and_logs_get_a_line_per_step() {
    let mut failed = rec("api-handler", Step::Test, Status::Failed);
    failed.details.error = Some(format!("AssertionError: {}", "expected the handler to answer 200 ".repeat(4)));
    let records = vec![failed, rec("web", Step::Deploy, Status::Passed)];
    let report = RunReport::new("r1", records.clone(), gate(&records));
    #[cfg(feature = "cli")]
    for width in [80u16, 120] {
        let table = report.to_table_width(width);
        // The table's rows (the gate's reasons below it are prose the terminal wraps).
        let rows = table.lines().filter(|l| l.starts_with(['┌', '│', '╞', '├', '└']));
        let widest = rows.map(|l| l.chars().count()).max().unwrap();
        assert!(widest <= usize::from(width), "{widest} columns at {width}:\n{table}");
        assert!(table.contains("api-handler"), "{table}");
    }
    let lines = report.to_lines();
    assert!(
        lines.lines().any(|l| l.starts_with("api-handler test: failed") && l.contains("AssertionError")),
        "{lines}"
    );
    assert!(lines.lines().any(|l| l.starts_with("web deploy: passed")), "{lines}");
    assert!(lines.contains("gate: refused"), "{lines}");
}
